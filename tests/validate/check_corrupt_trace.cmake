# ctest script: adalora-trace must report FAIL (exit 1) on a corrupted trace and PASS on the original.
execute_process(COMMAND ${MAKE_CORRUPT} ${TRACE} ${OUT} ${TENSOR} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "make_corrupt_trace failed (${rc})")
endif()
execute_process(COMMAND ${TOOL} ${OUT} ${TRACE} RESULT_VARIABLE rc OUTPUT_VARIABLE out)
message("${out}")
if(NOT rc EQUAL 1)
  message(FATAL_ERROR "adalora-trace exited ${rc} on a corrupted trace; expected 1")
endif()
if(NOT out MATCHES "FAIL corrupted[^\n]*: step [0-9]+, adapter " OR NOT out MATCHES "PASS " OR
   NOT out MATCHES "1 passed, 1 failed")
  message(FATAL_ERROR "adalora-trace output does not report the corrupted file's first mismatch")
endif()
