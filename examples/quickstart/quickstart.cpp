// quickstart: fine-tune a frozen 3-layer MLP with SVD adapters, AdamW, the orthogonal regularizer and AdaLoRA.
//
// The target network is the base network plus a low-rank change of a different rank in each layer (1, 6 and 2).
// Every layer gets an adapter of rank 8; AdaLoRA starts with a budget of 24 ranks and ends with 9, and should
// spend them where the target needs them. Everything runs on the CPU through the Eigen backend in well under a
// minute; the same code runs on another backend by changing the `backend` alias.
#include <cmath>
#include <cstdio>
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
    const float sigma = 3.0f / float(1 + k);
    for (std::size_t o = 0; o < out; ++o)
      for (std::size_t j = 0; j < in; ++j) w[o * in + j] += sigma * u[o * rank + k] * v[k * in + j];
  }
  return w;
}

struct mlp {
  std::vector<std::size_t> dims;  // 32 → 64 → 64 → 16
  std::vector<matrix> weights;    // layer l: dims[l+1] × dims[l]
};

/// Forward through the frozen base (+ adapters when given), keeping each layer's input for the backward pass.
matrix forward(backend& be, const mlp& net, std::vector<adalora::svd_adapter<backend>>* adapters, const matrix& x,
               std::size_t batch, std::vector<matrix>& acts) {
  acts.assign(1, x);
  for (std::size_t l = 0; l < net.weights.size(); ++l) {
    const std::size_t in = net.dims[l], out = net.dims[l + 1];
    matrix z(batch * out, 0.0f);
    be.gemm(transpose::no, transpose::yes, batch, out, in, 1.0f, acts[l].data(), in, net.weights[l].data(), in, 0.0f,
            z.data(), out);
    if (adapters)
      (*adapters)[l].forward(make_matrix_view(static_cast<const float*>(acts[l].data()), batch, in),
                             make_matrix_view(z.data(), batch, out));
    if (l + 1 < net.weights.size())
      for (auto& v : z) v = std::tanh(v);
    acts.push_back(std::move(z));
  }
  return acts.back();
}

double mse(const matrix& y, const matrix& target) {
  double s = 0;
  for (std::size_t i = 0; i < y.size(); ++i) s += double(y[i] - target[i]) * (y[i] - target[i]);
  return s / double(y.size());
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  backend be;
  const std::vector<std::size_t> true_rank = {1, 6, 2};
  mlp base{{32, 64, 64, 16}, {}}, target{{32, 64, 64, 16}, {}};
  for (std::size_t l = 0; l < 3; ++l) {
    const std::size_t in = base.dims[l], out = base.dims[l + 1];
    base.weights.push_back(random_matrix(out, in, 1.0f / std::sqrt(float(in)), rng));
    target.weights.push_back(add_low_rank(base.weights[l], out, in, true_rank[l], rng));
  }

  adalora::adalora_config cfg;
  cfg.init_r = 8;
  cfg.target_r = 3;
  cfg.lora_alpha = 8;
  cfg.tinit = 100;
  cfg.tfinal = 150;
  cfg.total_step = 700;
  cfg.deltaT = 10;
  cfg.orth_reg_weight = 0.1;

  // One SVD adapter per layer, registered with the allocator; AdamW over all adapter parameters.
  std::vector<adalora::svd_adapter<backend>> adapters;
  for (std::size_t l = 0; l < 3; ++l)
    adapters.push_back(adalora::svd_adapter<backend>::from_config(base.dims[l], base.dims[l + 1], cfg, 100 + l));
  adalora::rank_allocator<backend> allocator(cfg);
  std::vector<adalora::parameter_span> params;
  std::vector<adalora::svd_adapter<backend>*> adapter_ptrs;
  for (std::size_t l = 0; l < 3; ++l) {
    allocator.add_adapter("layer" + std::to_string(l), adapters[l].allocator_views());
    for (auto p : adapters[l].parameters()) params.push_back(p);
    adapter_ptrs.push_back(&adapters[l]);
  }
  adalora::adamw_options opt_options;
  opt_options.lr = 1e-2;
  opt_options.weight_decay = 0.0;
  adalora::adamw<backend> optimizer(params, opt_options);

  const std::size_t batch = 64;
  auto sample = [&](std::size_t n, matrix& x, matrix& y) {
    x = random_matrix(n, 32, 1.0f, rng);
    std::vector<matrix> acts;
    y = forward(be, target, nullptr, x, n, acts);
  };
  matrix x_test, y_test;
  sample(512, x_test, y_test);
  auto held_out_loss = [&] {
    std::vector<matrix> acts;
    for (auto& a : adapters) a.train(false);
    const double l = mse(forward(be, base, &adapters, x_test, 512, acts), y_test);
    for (auto& a : adapters) a.train(true);
    return l;
  };

  std::printf("quickstart: 3-layer MLP, SVD adapters init_r %lld -> target_r %lld (budget %lld -> %lld)\n",
              (long long)cfg.init_r, (long long)cfg.target_r, (long long)allocator.initial_budget(),
              (long long)allocator.target_budget());
  std::printf("true rank of the change per layer: %zu %zu %zu\n", true_rank[0], true_rank[1], true_rank[2]);
  std::printf("%5s %12s %12s %7s  %s\n", "step", "train loss", "held-out", "budget", "ranks per layer");
  const double start_loss = held_out_loss();
  std::printf("%5s %12s %12.5f %7lld  8 8 8\n", "start", "", start_loss, (long long)allocator.initial_budget());

  std::vector<matrix> acts;
  matrix x, y_true;
  for (std::int64_t t = 0; t < cfg.total_step; ++t) {
    // forward
    sample(batch, x, y_true);
    const matrix y = forward(be, base, &adapters, x, batch, acts);
    const double loss = mse(y, y_true);
    // backward: dL/dy, then through each layer (base weight and adapter), tanh between layers
    matrix grad(y.size());
    for (std::size_t i = 0; i < y.size(); ++i) grad[i] = 2.0f * (y[i] - y_true[i]) / float(y.size());
    for (std::size_t l = 3; l-- > 0;) {
      const std::size_t in = base.dims[l], out = base.dims[l + 1];
      matrix grad_in(batch * in, 0.0f);
      be.gemm(transpose::no, transpose::no, batch, in, out, 1.0f, grad.data(), out, base.weights[l].data(), in, 0.0f,
              grad_in.data(), in);
      adapters[l].backward(make_matrix_view(static_cast<const float*>(grad.data()), batch, out),
                           make_matrix_view(grad_in.data(), batch, in));
      if (l > 0)
        for (std::size_t i = 0; i < grad_in.size(); ++i) grad_in[i] *= 1.0f - acts[l][i] * acts[l][i];  // tanh'
      grad = std::move(grad_in);
    }
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
  std::printf("final rank pattern (1 = kept singular direction), true ranks 1, 6, 2:\n");
  for (std::size_t l = 0; l < 3; ++l) {
    std::printf("  layer%zu  ", l);
    for (bool keep : allocator.rank_pattern("layer" + std::to_string(l))) std::printf("%d", keep ? 1 : 0);
    std::printf("\n");
  }
  return 0;
}
