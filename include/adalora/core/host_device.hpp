// Portability macro marking functions callable from host and CUDA device code.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define ADALORA_HOST_DEVICE __host__ __device__
#else
#define ADALORA_HOST_DEVICE
#endif
