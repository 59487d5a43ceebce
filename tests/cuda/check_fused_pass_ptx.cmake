# ctest script: compiles tests/cuda/fused_pass_ptx.cu to PTX with nvcc's default flags (fused multiply-adds allowed:
# -fmad=true) and checks that the fused pass's arithmetic is explicitly rounded, so that its bits do not depend on
# -fmad (core/float_ops.hpp: mul_rn, add_rn, ...):
#   - the kernels are there (.entry), with explicitly rounded float products (mul.rn.f32);
#   - no fma instruction;
#   - no float or double add, sub or mul without a rounding modifier (ptxas may contract those into FMAs).
# Needs nvcc, not a GPU. Arguments: -DNVCC= -DSOURCE= -DINCLUDE= -DOUT= (the .ptx to write) [-DARCH=90].
foreach(_var NVCC SOURCE INCLUDE OUT)
  if(NOT DEFINED ${_var})
    message(FATAL_ERROR "check_fused_pass_ptx.cmake: -D${_var}= is required")
  endif()
endforeach()
if(NOT DEFINED ARCH)
  set(ARCH 90)
endif()
execute_process(
  COMMAND "${NVCC}" -std=c++20 --expt-relaxed-constexpr -arch=sm_${ARCH} -ptx "-I${INCLUDE}" "${SOURCE}" -o "${OUT}"
  RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "nvcc -ptx failed (${_rc}):\n${_out}\n${_err}")
endif()
file(STRINGS "${OUT}" _entries REGEX "^[ \t]*\\.(visible[ \t]+)?\\.entry")
file(STRINGS "${OUT}" _rounded_mul REGEX "mul\\.rn\\.f32")
file(STRINGS "${OUT}" _fma REGEX "(^|[ \t])fma\\.")
file(STRINGS "${OUT}" _unrounded REGEX "(^|[ \t])(add|sub|mul)(\\.sat)?\\.f(32|64)[ \t]")
list(LENGTH _entries _n_entries)
list(LENGTH _rounded_mul _n_rounded_mul)
list(LENGTH _fma _n_fma)
list(LENGTH _unrounded _n_unrounded)
message(STATUS "${OUT}: ${_n_entries} kernels, ${_n_rounded_mul} mul.rn.f32, ${_n_fma} fma, "
               "${_n_unrounded} float add/sub/mul without a rounding modifier")
if(_n_fma GREATER 0 OR _n_unrounded GREATER 0)
  list(SUBLIST _fma 0 5 _fma_head)
  list(SUBLIST _unrounded 0 5 _unrounded_head)
  message(FATAL_ERROR "the fused pass compiled with nvcc's defaults has ${_n_fma} fused multiply-adds and "
                      "${_n_unrounded} unrounded float operations (ptxas may contract them): its bits would depend on "
                      "-fmad. Write its device arithmetic with detail::mul_rn / add_rn / sub_rn / div_rn "
                      "(core/float_ops.hpp). First ones:\n${_fma_head}\n${_unrounded_head}")
endif()
if(_n_entries LESS 7 OR _n_rounded_mul EQUAL 0)
  message(FATAL_ERROR "the PTX lacks the fused pass's kernels or its float products: the check would prove nothing")
endif()
