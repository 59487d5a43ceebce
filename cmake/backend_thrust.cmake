# The Thrust backend (adalora::thrust, CPP/OMP systems with any C++ compiler) and the CUDA backend (adalora::cuda).
