// Included by each CUDA test program: before any test runs, says which GPU it runs on, or stops at once with one clear
// "no CUDA device" line (exit status 2) instead of failing every test case.
#pragma once

#include <catch2/catch.hpp>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
