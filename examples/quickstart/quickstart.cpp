// quickstart: fine-tune a frozen residual MLP with SVD adapters, AdamW, the orthogonal regularizer and AdaLoRA.
//
// The target network is the base network plus a low-rank change of a different rank in each layer (1, 6 and 2).
// Every layer gets an adapter of rank 8; AdaLoRA starts with a budget of 24 ranks and ends with 9 — exactly what the
// change needs — and finds where to spend them: the last lines print each layer's kept rank beside its true rank,
// and whether they agree. Everything runs on the CPU through the Eigen backend in about a second; the same code runs
// on another backend by changing the `backend` alias.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <span>
#include <vector>

#include "adalora/adalora.hpp"
#include "adalora/adapters/orthogonal_regularizer.hpp"
#include "adalora/adapters/svd_adapter.hpp"
#include "adalora/optim/adamw.hpp"

namespace {

using backend = adalora::eigen_backend;
using adalora::make_matrix_view;
using adalora::transpose;
using matrix = std::vector<float>;  // row-major

matrix random_matrix(std::size_t rows, std::size_t cols, float scale, std::mt19937& rng) {
  std::normal_distribution<float> n(0.0f, scale);
  matrix m(rows * cols);
  for (auto& v : m) v = n(rng);
  return m;
}

/// W + U diag(σ) Vᵀ with orthonormal-ish random U, V: a change of exactly `rank`.
matrix add_low_rank(matrix w, std::size_t out, std::size_t in, std::size_t rank, std::mt19937& rng) {
  const matrix u = random_matrix(out, rank, 1.0f / std::sqrt(float(out)), rng);
  const matrix v = random_matrix(rank, in, 1.0f / std::sqrt(float(in)), rng);
  for (std::size_t k = 0; k < rank; ++k) {
    const float sigma = 2.0f;
    for (std::size_t o = 0; o < out; ++o)
      for (std::size_t j = 0; j < in; ++j) w[o * in + j] += sigma * u[o * rank + k] * v[k * in + j];
  }
  return w;
}

/// A residual MLP: h ← h + tanh(h Wₗᵀ) for each layer l, all d × d. The residual path carries the loss gradient to
/// every layer directly, so no layer is favoured for sitting near the output, and the tanh inside each branch keeps
/// a change of one layer from being moved into another: each layer's true rank is well defined.
struct residual_mlp {
  std::size_t d = 0;
  std::vector<matrix> weights;
};

/// Forward through the frozen base (+ adapters when given); keeps each layer's tanh output for the backward pass.
matrix forward(backend& be, const residual_mlp& net, std::vector<adalora::svd_adapter<backend>>* adapters,
               const matrix& x, std::size_t batch, std::vector<matrix>& tanhs) {
  const std::size_t d = net.d;
  matrix h = x;
  tanhs.clear();
  for (std::size_t l = 0; l < net.weights.size(); ++l) {
    matrix z(batch * d, 0.0f);
    be.gemm(transpose::no, transpose::yes, batch, d, d, 1.0f, h.data(), d, net.weights[l].data(), d, 0.0f, z.data(),
            d);
    if (adapters)
      (*adapters)[l].forward(make_matrix_view(static_cast<const float*>(h.data()), batch, d),
                             make_matrix_view(z.data(), batch, d));
    for (std::size_t i = 0; i < z.size(); ++i) {
      z[i] = std::tanh(z[i]);
      h[i] += z[i];
    }
    tanhs.push_back(std::move(z));
  }
  return h;
}

/// Backward of forward() for the adapters (their gradients accumulate; each adapter kept its input in forward()).
void backward(backend& be, const residual_mlp& net, std::vector<adalora::svd_adapter<backend>>& adapters,
              const std::vector<matrix>& tanhs, matrix grad, std::size_t batch) {
  const std::size_t d = net.d;
  for (std::size_t l = net.weights.size(); l-- > 0;) {
    matrix dz(grad.size());
    for (std::size_t i = 0; i < grad.size(); ++i) dz[i] = grad[i] * (1.0f - tanhs[l][i] * tanhs[l][i]);  // tanh'
    // dh = grad (the residual) + dz W (the base) + the adapter's share, which backward() adds
    be.gemm(transpose::no, transpose::no, batch, d, d, 1.0f, dz.data(), d, net.weights[l].data(), d, 1.0f, grad.data(),
            d);
    adapters[l].backward(make_matrix_view(static_cast<const float*>(dz.data()), batch, d),
                         make_matrix_view(grad.data(), batch, d));
  }
}

double mse(const matrix& y, const matrix& target) {
  double s = 0;
  for (std::size_t i = 0; i < y.size(); ++i) s += double(y[i] - target[i]) * (y[i] - target[i]);
  return s / double(y.size());
}

}  // namespace

int main(int argc, char** argv) {
  // quickstart [SEED]: another seed draws another network, change and data (7 by default)
  std::mt19937 rng(argc > 1 ? static_cast<unsigned>(std::strtoul(argv[1], nullptr, 10)) : 7u);
  backend be;
  const std::size_t d = 32, layers = 3;
  const std::vector<std::size_t> true_rank = {1, 6, 2};
  residual_mlp base{d, {}}, target{d, {}};
  for (std::size_t l = 0; l < layers; ++l) {
    base.weights.push_back(random_matrix(d, d, 1.0f / std::sqrt(float(d)), rng));
    target.weights.push_back(add_low_rank(base.weights[l], d, d, true_rank[l], rng));
  }

  adalora::adalora_config cfg;
  cfg.init_r = 8;
  cfg.target_r = 3;  // a final budget of 3 x 3 = 9 ranks: exactly what the change needs (1 + 6 + 2)
  cfg.lora_alpha = 8;
  cfg.tinit = 100;
  cfg.tfinal = 150;
  cfg.total_step = 700;
  cfg.deltaT = 10;
  cfg.orth_reg_weight = 0.1;

  // One SVD adapter per layer, registered with the allocator; AdamW over all adapter parameters.
  std::vector<adalora::svd_adapter<backend>> adapters;
  for (std::size_t l = 0; l < layers; ++l)
    adapters.push_back(adalora::svd_adapter<backend>::from_config(d, d, cfg, 100 + l));
  adalora::rank_allocator<backend> allocator(cfg);
  std::vector<adalora::parameter_span> params;
  std::vector<adalora::svd_adapter<backend>*> adapter_ptrs;
  for (std::size_t l = 0; l < layers; ++l) {
    allocator.add_adapter("layer" + std::to_string(l), adapters[l].allocator_views());
    for (auto p : adapters[l].parameters()) params.push_back(p);
    adapter_ptrs.push_back(&adapters[l]);
  }
  adalora::adamw_options opt_options;
  opt_options.lr = 1e-2;
  opt_options.weight_decay = 0.0;
  adalora::adamw<backend> optimizer(params, opt_options);

  const std::size_t batch = 64;
  std::vector<matrix> tanhs;
  auto sample = [&](std::size_t n, matrix& x, matrix& y) {
    x = random_matrix(n, d, 1.0f, rng);
    y = forward(be, target, nullptr, x, n, tanhs);
  };
  matrix x_test, y_test;
  sample(512, x_test, y_test);
  auto held_out_loss = [&] {
    for (auto& a : adapters) a.train(false);
    const double l = mse(forward(be, base, &adapters, x_test, 512, tanhs), y_test);
    for (auto& a : adapters) a.train(true);
    return l;
  };

  std::printf("quickstart: residual MLP of 3 layers (%zu x %zu), SVD adapters init_r %lld -> target_r %lld "
              "(budget %lld -> %lld)\n", d, d, (long long)cfg.init_r, (long long)cfg.target_r,
              (long long)allocator.initial_budget(), (long long)allocator.target_budget());
  std::printf("the target differs from the frozen network by a change of rank %zu, %zu and %zu in layers 0, 1, 2;\n"
              "AdaLoRA does not see these ranks, and should find them with the final budget of %lld\n",
              true_rank[0], true_rank[1], true_rank[2], (long long)allocator.target_budget());
  std::printf("%5s %12s %12s %7s  %s\n", "step", "train loss", "held-out", "budget", "ranks per layer");
  const double start_loss = held_out_loss();
  std::printf("%5s %12s %12.5f %7lld  8 8 8\n", "start", "", start_loss, (long long)allocator.initial_budget());

  matrix x, y_true;
  for (std::int64_t t = 0; t < cfg.total_step; ++t) {
    sample(batch, x, y_true);
    const matrix y = forward(be, base, &adapters, x, batch, tanhs);
    const double loss = mse(y, y_true);
    matrix grad(y.size());
    for (std::size_t i = 0; i < y.size(); ++i) grad[i] = 2.0f * (y[i] - y_true[i]) / float(y.size());
    backward(be, base, adapters, tanhs, std::move(grad), batch);
    // + γ·R: the orthogonal regularizer adds its gradient
    adalora::orthogonal_regularization<backend>(std::span<adalora::svd_adapter<backend>* const>(adapter_ptrs),
                                                cfg.orth_reg_weight);
    optimizer.step();
    const auto report = allocator.step(t);  // after the optimizer step, before the gradients are zeroed
    optimizer.zero_grad();

    if (t % 50 == 0 || t == cfg.total_step - 1) {
      const auto ranks = allocator.ranks();
      std::printf("%5lld %12.5f %12.5f %7lld  %lld %lld %lld\n", (long long)t, loss, held_out_loss(),
                  (long long)report.budget, (long long)ranks[0], (long long)ranks[1], (long long)ranks[2]);
    }
  }
  const double final_loss = held_out_loss();
  std::printf("\nheld-out loss: %.5f -> %.5f (%.1fx lower)\n", start_loss, final_loss, start_loss / final_loss);
  std::printf("final rank pattern (1 = kept singular direction):\n");
  const auto ranks = allocator.ranks();
  std::size_t matched = 0;
  for (std::size_t l = 0; l < layers; ++l) {
    std::printf("  layer%zu  ", l);
    for (bool keep : allocator.rank_pattern("layer" + std::to_string(l))) std::printf("%d", keep ? 1 : 0);
    std::printf("  rank %lld, true rank %zu\n", (long long)ranks[l], true_rank[l]);
    matched += static_cast<std::size_t>(ranks[l]) == true_rank[l] ? 1 : 0;
  }
  if (matched == layers)
    std::printf("AdaLoRA kept exactly the true rank in every layer.\n");
  else
    std::printf("AdaLoRA kept the true rank in %zu of %zu layers.\n", matched, layers);
  return 0;
}
