// A consumer program: includes adalora's public headers, builds and validates a config, prints OK.
#include <adalora/core/config.hpp>
#include <adalora/core/view.hpp>

#include <iostream>
#include <vector>

int main() {
  adalora::adalora_config config;
  config.init_r = 12;
  config.target_r = 8;
  config.tinit = 10;
  config.tfinal = 10;
  config.total_step = 100;
  try {
    config.validate();
  } catch (const adalora::error& e) {
    std::cerr << "adalora consumer: " << e.what() << "\n";
    return 1;
  }
  std::vector<float> weights(6, 1.0f);
  const auto view = adalora::make_matrix_view(weights.data(), 2, 3);
  if (view.size() != 6 || !view.is_contiguous()) {
    std::cerr << "adalora consumer: unexpected view " << adalora::extents_string(view) << "\n";
    return 1;
  }
  std::cout << "adalora consumer OK\n";
  return 0;
}
