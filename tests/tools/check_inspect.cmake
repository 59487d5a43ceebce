# adalora-inspect on each kind of input it reads, and on bad input; adalora-inspect and adalora-trace on the crafted
# files of issue 17 (each once died of a signal; now a message and status 1). Run by ctest (tests/CMakeLists.txt) with
#   -DINSPECT=<adalora-inspect> -DINTEROP=<peft_interop> -DDEMO=<allocator_demo> -DTRACE=<a PEFT trace> -DWORK=<dir>
#   -DREPLAY=<adalora-trace> -DFUZZ=<tests/fuzz, whose regressions/ hold the crafted files>
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

function(run_checked what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}${err}")
  endif()
endfunction()

# inspect(EXPECTED_STATUS PATH REGEX...): runs adalora-inspect PATH and requires each regex in its output
function(inspect status path)
  execute_process(COMMAND "${INSPECT}" ${path} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(all "${out}${err}")
  if(NOT rc EQUAL status)
    message(FATAL_ERROR "adalora-inspect ${path}: exit status ${rc}, expected ${status}:\n${all}")
  endif()
  foreach(regex IN LISTS ARGN)
    if(NOT all MATCHES "${regex}")
      message(FATAL_ERROR "adalora-inspect ${path}: no match for '${regex}' in:\n${all}")
    endif()
  endforeach()
  message(STATUS "adalora-inspect ${path}: as expected")
endfunction()

run_checked("peft_interop write" "${INTEROP}" write "${WORK}/peft")
run_checked("allocator_demo" "${DEMO}" "${WORK}/allocator.safetensors")

# peft_interop's model: five adapters (layers.0/1 up and down, head), init_r 6
inspect(0 "${WORK}/peft/adalora" "PEFT AdaLoRA adapter, 5 modules" "config: init_r 6, "
        "rank kept [0-9]+ of 30 created" "\n +layers\\.0\\.up +12 +24 +[0-9]/6( +[0-9.e+-]+ +[0-9.e+-]+| +- +-)\n"
        "\n +head +12 +5 +[0-9]/6 ")
inspect(0 "${WORK}/peft/lora" "PEFT LoRA adapter, [0-9]+ modules" "config: r [0-9]+, lora_alpha"
        "\n +layers\\.0\\.down +24 +12 +[0-9] +F32\n")
# allocator_demo: six adapters of 64 × 64 at init_r 8, down to an average rank of 3 by the end
inspect(0 "${WORK}/allocator.safetensors" "allocator checkpoint \\(adalora-checkpoint/allocator/1\\), 6 adapters"
        "metric sensitivity_uncertainty, schedule cubic, last step 199, budget 18, "
        "final pattern fixed" "\n +layer2\\.v +64 +64 +[0-8]/8\n")
inspect(0 "${TRACE}" "safetensors, [0-9]+ tensors" "metadata: .*format = " "\n +[^ ]+ +F32 +\\[")

# bad input: no such path, a folder without a config, a file that is not safetensors, a config of another PEFT type,
# AdaLoRA tensors under a LoRA config
inspect(1 "${WORK}/nothing-here" "adalora-inspect: .*nothing-here")
file(MAKE_DIRECTORY "${WORK}/empty")
inspect(1 "${WORK}/empty" "it has no adapter_config.json")
inspect(1 "${WORK}/peft/adalora/adapter_config.json" "adalora-inspect: .*adapter_config.json")
file(COPY "${WORK}/peft/lora/adapter_model.safetensors" DESTINATION "${WORK}/ia3")
file(WRITE "${WORK}/ia3/adapter_config.json" "{\"peft_type\": \"IA3\"}")
inspect(1 "${WORK}/ia3" "peft_type 'IA3'; adalora-inspect reads ADALORA and LORA adapters")
file(COPY "${WORK}/peft/adalora/adapter_model.safetensors" DESTINATION "${WORK}/lora-with-adalora-tensors")
file(COPY "${WORK}/peft/lora/adapter_config.json" DESTINATION "${WORK}/lora-with-adalora-tensors")
inspect(1 "${WORK}/lora-with-adalora-tensors" "tensor 'base_model\\.model\\.[^']+' \\[[0-9, ]+\\] is not a LoRA weight")
# one bad path among good ones: the good ones are still printed, the status is 1
inspect(1 "${WORK}/nothing-here;${WORK}/peft/lora" "PEFT LoRA adapter, [0-9]+ modules" "adalora-inspect: .*nothing-here")
inspect(2 "" "usage: adalora-inspect PATH")

# issue 17: crafted input, a clear message and status 1, never a signal
inspect(1 "${FUZZ}/regressions/checkpoint/adapter-rank-1e8.safetensors"
        "adalora-inspect: allocator checkpoint .*: the rank pattern \\(keep\\) has 4 entries; the adapters' ranks sum to 100000002")
inspect(1 "${FUZZ}/regressions/checkpoint/nan-importance.safetensors" "the importance holds 1 NaN or infinite values")
string(REPEAT "[" 100000 open)
string(REPEAT "]" 100000 close)
file(COPY "${WORK}/peft/adalora/adapter_model.safetensors" DESTINATION "${WORK}/deep")
file(WRITE "${WORK}/deep/adapter_config.json" "{\"peft_type\": \"ADALORA\", \"target_modules\": ${open}${close}}")
inspect(1 "${WORK}/deep" "adapter_config.json nests arrays and objects more than 64 deep")
file(WRITE "${WORK}/deep/adapter_config.json" "{\"peft_type\": ${open}${close}}")
inspect(1 "${WORK}/deep" "more than 64 deep")
file(WRITE "${WORK}/deep/adapter_config.json" "{\"peft_type\": [\"LORA\"]}")
inspect(1 "${WORK}/deep" "peft_type is array of 1 values; expected a string")
file(COPY "${WORK}/peft/lora/adapter_model.safetensors" DESTINATION "${WORK}/lora-deep")
file(WRITE "${WORK}/lora-deep/adapter_config.json" "{\"peft_type\": \"LORA\", \"rank_pattern\": {\"x\": ${open}${close}}}")
inspect(1 "${WORK}/lora-deep" "more than 64 deep")
file(WRITE "${WORK}/deep/adapter_config.json" "{\"peft_type\": \"ADALORA\", \"init_r\": 6, \"lora_alpha\": 1e300}")
inspect(1 "${WORK}/deep" "lora_alpha = 1e\\+300 makes the scaling")

# adalora-trace on a layer trace whose case claims d_in = d_out = batch = 2^32 with r = 0
execute_process(COMMAND "${REPLAY}" "${FUZZ}/regressions/layer_trace/sizes-2pow32.safetensors"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 1 OR NOT out MATCHES "FAIL sizes-2pow32.safetensors: layer trace: case 0: the size of W overflows")
  message(FATAL_ERROR "adalora-trace on the crafted layer trace: exit status ${rc}, expected 1:\n${out}${err}")
endif()
message(STATUS "adalora-trace on the crafted layer trace: as expected")
