// Writes a copy of a trace with one recorded λ flipped, for the test that adalora-trace reports FAIL.
#include <iostream>

#include "validate/trace_bytes.hpp"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: make_corrupt_trace IN OUT TENSOR\n";
    return 2;
  }
  auto bytes = adalora::testing::read_bytes(argv[1]);
  const auto values = adalora::io::safetensors_file::parse(bytes).read_f32(argv[3]);
  adalora::testing::poke_f32(bytes, argv[3], 0, values.at(0) == 0.0f ? 1.0f : 0.0f);
  adalora::testing::write_bytes(argv[2], bytes);
  return 0;
}
