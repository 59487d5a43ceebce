// budget_sweep: when does AdaLoRA pay off? The task of budget_study (study.hpp) at many budgets, with every importance
// metric, then ablations of the schedule, of the one-shot plug-in's warm-up and of the noise.
//
//   sweep:      final average rank from well below the total true rank to well above it; LoRA at that rank vs AdaLoRA
//               with sensitivity × uncertainty, sensitivity alone, magnitude, a user metric (Fisher saliency) and the
//               one-shot plug-in (ranks fixed once after warm-up, one_shot.hpp); every seed at every budget.
//   schedules:  cubic vs linear vs constant, and the length of the budgeting phase as a fraction of training, at one or
//               two budgets of the sweep (sensitivity × uncertainty); the one-shot plug-in's warm-up length there too.
//   noise:      the AdaLoRA metrics and LoRA at the tightest budget with noisier targets.
//
// Writes sweep.csv, sweep_ranks.csv, schedules.csv, noise.csv, summary.md (the tables) and the SVG pictures into --out.
// Deterministic: the same command writes the same files.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "study.hpp"
#include "svg.hpp"

namespace budget_study {
namespace {

// The sweep's task: 72 true directions over 24 matrices (an average true rank of 3), of rank 0 to 8, every block with
// a high-rank matrix, and changes in q and k (whose effect on the output passes through the softmax) as well as in
// v, o, up and down. One row per block: q k v o up down.
constexpr int sweep_ranks[4][6] = {{4, 0, 8, 2, 6, 0}, {0, 4, 2, 6, 0, 6}, {2, 0, 6, 0, 8, 2}, {0, 2, 0, 8, 2, 4}};

struct options {
  study_config study;
  std::vector<std::int64_t> budgets{1, 2, 3, 4, 6};  // average final rank per matrix
  std::vector<std::string> sweep_methods{"lora",           "adalora",        "adalora_sensitivity",
                                         "adalora_magnitude", "adalora_fisher", "one_shot"};
  std::vector<std::int64_t> schedule_budgets{2};
  std::vector<double> budgeting_fractions{0.2, 0.5, 0.8};  // of the steps; tinit stays at 10%
  std::vector<std::int64_t> warmups{20};                        // one-shot warm-up steps beside the sweep's tinit + 1
  std::vector<double> noise_levels;  // beside the sweep's own; none: no noise part
  std::vector<std::string> noise_methods{"lora", "adalora", "adalora_sensitivity", "adalora_magnitude",
                                         "adalora_fisher"};
  bool sweep = true, schedules = true, noise = true;
};

void usage() {
  std::printf(
      "budget_sweep: LoRA vs AdaLoRA and its importance metrics over a range of budgets; schedule, one-shot warm-up "
      "and noise ablations.\n"
      "usage: budget_sweep [--out DIR] [options]\n"
      "  --budgets LIST       average final ranks per matrix to sweep (default 1,2,3,4,6; the first is the noise "
      "part's)\n"
      "  --methods LIST       methods of the sweep (default lora,adalora,adalora_sensitivity,adalora_magnitude,\n"
      "                       adalora_fisher,one_shot; also one_shot_su, and NAME@STEPS for a one-shot warm-up)\n"
      "  --schedule-budgets LIST   budgets of the schedule ablation (default 2)\n"
      "  --fractions LIST     budgeting-phase lengths of the ablation, fractions of the steps (default 0.2,0.5,0.8)\n"
      "  --warmups LIST       one-shot warm-up steps of the ablation, besides tinit + 1 (default 20)\n"
      "  --noise-levels LIST  noise ratios of the noise part, besides --noise (default none: no noise part)\n"
      "  --only sweep|schedules|noise   run one part\n"
      "  --decay X            strength of the k-th true direction of a matrix: 0.8 * X^k (default 0.7)\n"
      "  --d-model N, --d-ff N, --blocks N   the network (default 32, 64, 4)\n"
      "%s"
      "defaults: 5 seeds, out budget_sweep_out, 500 steps, batch 16, init_r 8, tinit 50, tfinal 150, noise 0.5\n",
      common_usage);
}

template <class T>
std::vector<T> parse_list(const std::string& s) {
  std::vector<T> v;
  std::stringstream list(s);
  for (std::string item; std::getline(list, item, ',');)
    if (!item.empty()) v.push_back(static_cast<T>(std::stod(item)));
  return v;
}

options parse(int argc, char** argv) {
  options o;
  study_config& c = o.study;
  c.shape = {32, 64, 4, 8, 4};
  c.out = "budget_sweep_out";
  c.seeds = 5;
  c.init_r = 8;
  c.steps = 500;
  c.batch = 16;
  c.strengths = strength_profile::geometric;
  parse_args(argc, argv, c, usage, [&](const std::string& a, const std::function<std::string()>& value) {
    if (a == "--budgets") {
      o.budgets = parse_list<std::int64_t>(value());
    } else if (a == "--methods") {
      std::stringstream list(value());
      o.sweep_methods.clear();
      for (std::string item; std::getline(list, item, ',');) o.sweep_methods.push_back(find_method(item).key);
    } else if (a == "--schedule-budgets") {
      o.schedule_budgets = parse_list<std::int64_t>(value());
    } else if (a == "--fractions") {
      o.budgeting_fractions = parse_list<double>(value());
    } else if (a == "--warmups") {
      o.warmups = parse_list<std::int64_t>(value());
    } else if (a == "--noise-levels") {
      o.noise_levels = parse_list<double>(value());
    } else if (a == "--only") {
      const std::string part = value();
      o.sweep = part == "sweep";
      o.schedules = part == "schedules";
      o.noise = part == "noise";
      if (!o.sweep && !o.schedules && !o.noise) {
        std::fprintf(stderr, "--only: 'sweep', 'schedules' or 'noise', not '%s'\n", part.c_str());
        std::exit(2);
      }
    } else if (a == "--decay") {
      c.decay = std::stod(value());
    } else if (a == "--d-model") {
      c.shape.d_model = std::stoul(value());
    } else if (a == "--d-ff") {
      c.shape.d_ff = std::stoul(value());
    } else if (a == "--blocks") {
      c.shape.blocks = std::stoul(value());
    } else {
      return false;
    }
    return true;
  });
  c.finish(sweep_ranks);
  c.eval_every = c.steps;  // the sweep reads only the final held-out loss
  for (const auto* list : {&o.budgets, &o.schedule_budgets})
    for (std::int64_t b : *list)
      if (b < 1 || b >= c.init_r) {
        std::fprintf(stderr, "budget %lld is not in [1, init_r = %lld)\n", (long long)b, (long long)c.init_r);
        std::exit(2);
      }
  if (o.budgets.empty() || o.noise_levels.empty()) o.noise = false;
  return o;
}

// ---- the study's methods and runs --------------------------------------------------------------------------------

const char* schedule_name(schedule_kind k) {
  return k == schedule_kind::cubic ? "cubic" : k == schedule_kind::linear ? "linear" : "constant";
}
constexpr schedule_kind all_schedules[] = {schedule_kind::cubic, schedule_kind::linear, schedule_kind::constant};

/// The schedule ablation's variants: every schedule at every budgeting-phase length, sensitivity × uncertainty; in
/// order schedule-major.
std::vector<method> schedule_variants(const options& o) {
  std::vector<method> v;
  for (schedule_kind kind : all_schedules)
    for (double f : o.budgeting_fractions) {
      method m = find_method("adalora");
      m.schedule = kind;
      m.tinit_fraction = 0.1;
      m.budgeting_fraction = f;
      m.key = std::string("adalora_") + schedule_name(kind) + "_" + fmt("%.2f", f);
      m.label = std::string("AdaLoRA, ") + schedule_name(kind) + " schedule, budgeting " + fmt("%.0f%%", 100 * f);
      m.short_label = std::string(schedule_name(kind)) + " " + fmt("%.2f", f);
      v.push_back(m);
    }
  return v;
}

/// The one-shot plug-in at every warm-up of the ablation and the sweep's own (tinit + 1), in increasing order.
std::vector<method> warmup_variants(const options& o) {
  std::vector<std::int64_t> w = o.warmups;
  w.push_back(o.study.tinit + 1);
  std::sort(w.begin(), w.end());
  w.erase(std::unique(w.begin(), w.end()), w.end());
  std::vector<method> v;
  for (std::int64_t steps : w) v.push_back(find_method("one_shot@" + std::to_string(steps)));
  return v;
}

/// What makes two runs of one task the same run: the method's training (LoRA, or metric, schedule and allocator
/// phases), the budget and the seed. E.g. the ablation's cubic run at the study's own phases is the sweep's AdaLoRA.
using run_key = std::tuple<bool, int, int, std::int64_t, std::int64_t, std::int64_t, int>;
run_key key_of(const study_config& c, const method& m, std::int64_t target, int seed) {
  if (m.lora) return {true, 0, 0, 0, 0, target, seed};
  const auto cfg = adalora_config_for(c, m, target);
  // the one-shot config has no budgeting phase: its schedule does not matter
  const int schedule = m.one_shot_warmup != 0 ? -1 : int(m.schedule);
  return {false, int(m.metric), schedule, cfg.tinit, cfg.tfinal, target, seed};
}

/// The runs on one task (one noise level): each (method, budget, seed) once, trained together on the pool.
struct run_set {
  study_config c;
  std::vector<method> methods;  // the jobs' methods
  std::vector<job> jobs;
  std::map<run_key, std::size_t> index;
  std::map<run_key, run_result> done;
  double noise_floor = 0, base_loss = 0, run_seconds = 0;

  void want(const method& m, std::int64_t b) {
    if (!m.lora) adalora_config_for(c, m, b).validate();  // fail early, not in a worker thread
    for (int s = 0; s < c.seeds; ++s) {
      const run_key k = key_of(c, m, b, s);
      if (index.count(k)) continue;
      index[k] = jobs.size();
      methods.push_back(m);
      jobs.push_back({methods.size() - 1, s, b});
    }
  }
  void run() {
    if (jobs.empty()) return;
    std::vector<task> tasks;
    for (int s = 0; s < c.seeds; ++s) tasks.push_back(make_task(c, static_cast<std::uint64_t>(s)));
    const std::vector<run_result> results = run_jobs(c, tasks, methods, jobs, true);
    for (const auto& [k, j] : index) done[k] = results[j];
    for (const auto& r : results) run_seconds += r.seconds;
    for (const auto& t : tasks) {
      noise_floor += t.noise_std * t.noise_std / c.seeds;
      base_loss += t.base_loss / c.seeds;
    }
  }
  const run_result& at(const method& m, std::int64_t b, int s) const { return done.at(key_of(c, m, b, s)); }
};

struct cell {
  std::vector<double> loss, excess, recovery, covered;  // per seed, in seed order
};

/// The results of (method, budget) over the seeds.
using table = std::map<std::pair<std::size_t, std::int64_t>, cell>;

table collect(const run_set& runs, const std::vector<method>& methods, const std::vector<std::int64_t>& budgets) {
  table t;
  for (std::size_t m = 0; m < methods.size(); ++m)
    for (std::int64_t b : budgets)
      for (int s = 0; s < runs.c.seeds; ++s) {
        const run_result& r = runs.at(methods[m], b, s);
        auto& x = t[{m, b}];
        x.loss.push_back(r.final_loss);
        x.excess.push_back(r.final_excess);
        x.recovery.push_back(r.recovery);
        x.covered.push_back(true_rank_covered(runs.c.true_rank, r.final_rank));
      }
  return t;
}

// ---- pictures ----------------------------------------------------------------------------------------------------

svg::series band_series(const std::string& label, const std::string& color, const std::vector<double>& x,
                        const std::vector<std::vector<double>>& per_x, bool dashed = false) {
  svg::series s;
  s.label = label;
  s.color = color;
  s.dashed = dashed;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const auto st = summarize(per_x[i]);
    s.x.push_back(x[i]);
    s.y.push_back(st.mean);
    s.lo.push_back(st.min);
    s.hi.push_back(st.max);
  }
  return s;
}

/// One line per method against x (the budgets, or the noise levels): `value(m, i)` is method m's cell at x[i].
svg::line_chart methods_chart(const std::vector<method>& methods, const std::vector<double>& x,
                              const std::function<std::vector<double>(std::size_t, std::size_t)>& value) {
  svg::line_chart ch;
  ch.width = 820;
  ch.height = 540;
  for (std::size_t m = 0; m < methods.size(); ++m) {
    std::vector<std::vector<double>> per_x;
    for (std::size_t i = 0; i < x.size(); ++i) per_x.push_back(value(m, i));
    ch.lines.push_back(band_series(methods[m].pretty, methods[m].color, x, per_x, methods[m].one_shot_warmup != 0));
  }
  return ch;
}

/// A vertical dotted line at x over the y range of the chart's lines.
void mark_x(svg::line_chart& ch, double x, const std::string& label) {
  double lo = 1e300, hi = -1e300;
  for (const auto& s : ch.lines)
    for (const auto* v : {&s.lo, &s.hi, &s.y})
      for (double y : *v) lo = std::min(lo, y), hi = std::max(hi, y);
  ch.lines.push_back(svg::series{label, "#999999", {x, x}, {lo, hi}, {}, {}, true, false, 1.2});
}

// ---- tables ------------------------------------------------------------------------------------------------------

std::string pm(const std::vector<double>& v, const char* f = "%.4f") {
  const auto s = summarize(v);
  return fmt(f, s.mean) + " \u00b1 " + fmt(f, s.sd);
}

/// Paired by seed: mean and sd of a − b, and on how many seeds a < b.
struct paired {
  double mean = 0, sd = 0;
  int lower = 0, n = 0;
  /// The difference is at least two standard errors from zero.
  bool separated() const { return n > 1 && std::abs(mean) > 2.0 * sd / std::sqrt(double(n)); }
  std::string text() const {
    const std::string v = fmt("%+.4f", mean) + " \u00b1 " + fmt("%.4f", sd);
    return (separated() ? "**" + v + "**" : v) + "; " + std::to_string(lower) + "/" + std::to_string(n);
  }
};
paired compare(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> d;
  paired p;
  for (std::size_t i = 0; i < a.size(); ++i) {
    d.push_back(a[i] - b[i]);
    p.lower += a[i] < b[i] ? 1 : 0;
  }
  const auto s = summarize(d);
  p.mean = s.mean;
  p.sd = s.sd;
  p.n = static_cast<int>(d.size());
  return p;
}

/// A markdown table: a header row of column titles, then rows; `cell(row, col)` fills it.
void md_table(std::ostream& md, const std::string& corner, const std::vector<std::string>& columns,
              const std::vector<std::string>& rows, const std::function<std::string(std::size_t, std::size_t)>& cell) {
  md << "| " << corner << " |";
  for (const auto& c : columns) md << " " << c << " |";
  md << "\n|---|";
  for (std::size_t i = 0; i < columns.size(); ++i) md << "---|";
  md << "\n";
  for (std::size_t r = 0; r < rows.size(); ++r) {
    md << "| " << rows[r] << " |";
    for (std::size_t c = 0; c < columns.size(); ++c) md << " " << cell(r, c) << " |";
    md << "\n";
  }
  md << "\n";
}

std::size_t index_of(const std::vector<method>& ms, const std::string& key) {
  return static_cast<std::size_t>(
      std::find_if(ms.begin(), ms.end(), [&](const method& m) { return m.key == key; }) - ms.begin());
}

std::vector<std::string> pretty_names(const std::vector<method>& ms) {
  std::vector<std::string> v;
  for (const auto& m : ms) v.push_back(m.pretty);
  return v;
}

/// The indices and names of every method but method `a`.
std::pair<std::vector<std::size_t>, std::vector<std::string>> all_but(const std::vector<method>& ms, std::size_t a) {
  std::pair<std::vector<std::size_t>, std::vector<std::string>> r;
  for (std::size_t m = 0; m < ms.size(); ++m)
    if (m != a) r.first.push_back(m), r.second.push_back(ms[m].pretty);
  return r;
}

const char* paired_caption =
    " (mean \u00b1 sd of the per-seed differences; k/n: lower on k of n seeds; **bold**: at least two standard errors "
    "from 0)";

// ---- the parts ---------------------------------------------------------------------------------------------------

void report_sweep(const options& o, const run_set& runs, const std::vector<method>& methods, std::ostream& md) {
  const study_config& c = runs.c;
  const table t = collect(runs, methods, o.budgets);
  const int true_total = std::accumulate(c.true_rank.begin(), c.true_rank.end(), 0);
  std::ofstream csv(c.out + "/sweep.csv"), ranks(c.out + "/sweep_ranks.csv");
  csv << "method,budget_avg_rank,budget_total,seed,held_out_loss,held_out_excess_loss,direction_recovery,"
         "true_rank_covered,final_total_rank\n";
  ranks << "method,budget_avg_rank,seed,matrix,true_rank,final_rank\n";
  for (const auto& m : methods)
    for (std::int64_t b : o.budgets)
      for (int s = 0; s < c.seeds; ++s) {
        const run_result& r = runs.at(m, b, s);
        csv << m.key << "," << b << "," << b * std::int64_t(c.shape.matrices()) << "," << s << ","
            << fmt("%.6f", r.final_loss) << "," << fmt("%.6f", r.final_excess) << "," << fmt("%.4f", r.recovery)
            << "," << fmt("%.4f", true_rank_covered(c.true_rank, r.final_rank)) << ","
            << std::accumulate(r.final_rank.begin(), r.final_rank.end(), std::int64_t{0}) << "\n";
        for (std::size_t x = 0; x < r.final_rank.size(); ++x)
          ranks << m.key << "," << b << "," << s << "," << c.shape.name_of(x) << "," << c.true_rank[x] << ","
                << r.final_rank[x] << "\n";
      }

  // pictures: loss and recovery against the budget
  const std::vector<double> x(o.budgets.begin(), o.budgets.end());
  const double mean_true = double(true_total) / double(c.true_rank.size());
  const std::string subtitle = "mean over " + seeds_text(c.seeds) + ", band: min\u2013max over seeds; " +
                               std::to_string(c.shape.matrices()) + " matrices, total true rank " +
                               std::to_string(true_total);
  const std::string x_label = "final budget: average rank per matrix (dotted: the average true rank)";
  const std::string note = "AdaLoRA from init_r " + std::to_string(c.init_r) + ", tinit " + std::to_string(c.tinit) +
                           ", tfinal " + std::to_string(c.tfinal) + ", cubic schedule; one-shot (dashed): ranks fixed "
                           "once at step " + std::to_string(c.tinit + 1) + ".";
  svg::line_chart loss = methods_chart(methods, x, [&](std::size_t m, std::size_t i) {
    return t.at({m, o.budgets[i]}).excess;
  });
  loss.title = "Held-out loss against the budget";
  loss.subtitle = subtitle;
  loss.x_label = x_label;
  loss.y_label = "held-out excess MSE (clean targets, log scale)";
  loss.log_y = true;
  loss.note = "Excess MSE: held-out MSE against the clean targets (what the network gets wrong beyond the noise).\n" +
              note;
  mark_x(loss, mean_true, "average true rank");
  svg::write_file(c.out + "/sweep_loss.svg", svg::render(loss));
  svg::line_chart rec = methods_chart(methods, x, [&](std::size_t m, std::size_t i) {
    return t.at({m, o.budgets[i]}).recovery;
  });
  rec.title = "True-direction recovery against the budget";
  rec.subtitle = subtitle;
  rec.x_label = x_label;
  rec.y_label = "true-direction recovery";
  rec.note = "Recovery: for each true direction \u03c3 u v\u1d40, the share u\u1d40 \u0394W v / \u03c3 of its strength "
             "the learned change holds (clamped to [0, 1]), averaged over the " + std::to_string(true_total) +
             " directions.\n" + note;
  mark_x(rec, mean_true, "average true rank");
  svg::write_file(c.out + "/sweep_recovery.svg", svg::render(rec));

  // tables
  std::vector<std::string> columns;
  for (std::int64_t b : o.budgets)
    columns.push_back(std::to_string(b) + " (" +
                      fmt("%.2f", double(b * std::int64_t(c.shape.matrices())) / true_total) + "\u00d7)");
  const auto names = pretty_names(methods);
  md << "### Held-out excess MSE (clean targets), mean \u00b1 sd over seeds\n\n";
  md_table(md, "average rank (budget / total true rank)", columns, names,
           [&](std::size_t m, std::size_t i) { return pm(t.at({m, o.budgets[i]}).excess); });
  md << "### Held-out MSE (noisy targets; noise floor " << fmt("%.4f", runs.noise_floor) << ")\n\n";
  md_table(md, "average rank", columns, names,
           [&](std::size_t m, std::size_t i) { return pm(t.at({m, o.budgets[i]}).loss); });
  md << "### True-direction recovery, mean \u00b1 sd (in brackets: rank-based coverage, \u03a3 min(final, true) / "
        "\u03a3 true)\n\n";
  md_table(md, "average rank", columns, names, [&](std::size_t m, std::size_t i) {
    const cell& x = t.at({m, o.budgets[i]});
    return pm(x.recovery, "%.3f") + " (" + fmt("%.0f%%", 100 * summarize(x.covered).mean) + ")";
  });
  for (const std::string against : {"adalora", "lora"}) {
    const std::size_t a = index_of(methods, against);
    if (a == methods.size()) continue;
    const auto others = all_but(methods, a);
    md << "### Paired by seed: excess MSE minus that of " << methods[a].pretty << " at the same budget"
       << paired_caption << "\n\n";
    md_table(md, "average rank", columns, others.second, [&](std::size_t r, std::size_t i) {
      return compare(t.at({others.first[r], o.budgets[i]}).excess, t.at({a, o.budgets[i]}).excess).text();
    });
  }
}

void report_schedules(const options& o, const run_set& runs, std::ostream& md) {
  const study_config& c = runs.c;
  const std::vector<method> variants = schedule_variants(o), warmups = warmup_variants(o);
  const table t = collect(runs, variants, o.schedule_budgets), tw = collect(runs, warmups, o.schedule_budgets);
  std::ofstream csv(c.out + "/schedules.csv");
  csv << "schedule,budgeting_fraction,tinit,tfinal,budget_avg_rank,seed,held_out_loss,held_out_excess_loss,"
         "direction_recovery\n";
  for (const auto* list : {&variants, &warmups})
    for (const auto& m : *list) {
      const auto cfg = adalora_config_for(c, m, o.schedule_budgets.front());
      for (std::int64_t b : o.schedule_budgets)
        for (int s = 0; s < c.seeds; ++s) {
          const run_result& r = runs.at(m, b, s);
          csv << (m.one_shot_warmup ? "one_shot" : schedule_name(m.schedule)) << ","
              << fmt("%.2f", double(cfg.final_step() - cfg.tinit - 1) / double(c.steps)) << "," << cfg.tinit << ","
              << cfg.tfinal << "," << b << "," << s << "," << fmt("%.6f", r.final_loss) << ","
              << fmt("%.6f", r.final_excess) << "," << fmt("%.4f", r.recovery) << "\n";
        }
    }
  const std::size_t per_kind = o.budgeting_fractions.size();
  const char* colors[] = {"#1b6ec2", "#d95f02", "#7570b3"};
  std::vector<std::string> fraction_columns;
  for (double f : o.budgeting_fractions) fraction_columns.push_back(fmt("%.0f%%", 100 * f));
  std::vector<std::string> warmup_columns;
  for (const auto& m : warmups)
    warmup_columns.push_back(std::to_string(m.one_shot_warmup) + " (" +
                             fmt("%.0f%%", 100.0 * double(m.one_shot_warmup) / double(c.steps)) + ")");
  for (std::int64_t b : o.schedule_budgets) {
    svg::line_chart ch;
    ch.title = "Schedule and budgeting-phase length, average rank " + std::to_string(b);
    ch.subtitle = "AdaLoRA (sensitivity \u00d7 uncertainty), mean over " + seeds_text(c.seeds) +
                  ", band: min\u2013max over seeds; tinit = 10% of the steps";
    ch.x_label = "budgeting phase (T \u2212 tfinal \u2212 tinit) as a fraction of the steps";
    ch.y_label = "held-out excess MSE (clean targets)";
    ch.width = 760;
    ch.height = 480;
    ch.note = "The budget falls from init_r " + std::to_string(c.init_r) + " to " + std::to_string(b) +
              " per matrix during the budgeting phase; the pattern is then frozen for tfinal steps.\n"
              "Constant: the target budget from the first mask step on, re-selected every deltaT steps.";
    for (std::size_t k = 0; k < 3; ++k) {
      std::vector<std::vector<double>> per_x;
      for (std::size_t f = 0; f < per_kind; ++f) per_x.push_back(t.at({k * per_kind + f, b}).excess);
      ch.lines.push_back(band_series(schedule_name(all_schedules[k]), colors[k], o.budgeting_fractions, per_x));
    }
    svg::write_file(c.out + "/schedules_r" + std::to_string(b) + ".svg", svg::render(ch));

    md << "### Schedule ablation at average rank " << b << " (" << b * std::int64_t(c.shape.matrices())
       << " in all): held-out excess MSE, mean \u00b1 sd; columns: the budgeting phase as a share of the steps\n\n";
    md_table(md, "schedule", fraction_columns, {"cubic", "linear", "constant"}, [&](std::size_t k, std::size_t f) {
      return pm(t.at({k * per_kind + f, b}).excess);
    });
    const std::size_t ref = index_of(variants, "adalora_cubic_" + fmt("%.2f", 0.6));
    if (ref < variants.size()) {
      md << "Paired by seed against cubic with a 60% budgeting phase" << paired_caption << ":\n\n";
      md_table(md, "schedule", fraction_columns, {"cubic", "linear", "constant"}, [&](std::size_t k, std::size_t f) {
        return k * per_kind + f == ref ? std::string("\u2013")
                                       : compare(t.at({k * per_kind + f, b}).excess, t.at({ref, b}).excess).text();
      });
    }
    md << "One-shot plug-in at average rank " << b << ": held-out excess MSE and true-direction recovery by warm-up "
       << "length (steps before the ranks are fixed)\n\n";
    md_table(md, "warm-up steps", warmup_columns, {"excess MSE", "recovery"}, [&](std::size_t row, std::size_t w) {
      const cell& x = tw.at({w, b});
      return row == 0 ? pm(x.excess) : pm(x.recovery, "%.3f");
    });
  }
}

void report_noise(const options& o, const std::vector<run_set>& levels, const std::vector<method>& methods,
                  std::ostream& md) {
  const study_config& c = levels.front().c;
  const std::int64_t b = o.budgets.front();
  std::vector<double> x;
  std::vector<table> tables;
  for (const auto& l : levels) {
    x.push_back(l.c.noise_ratio);
    tables.push_back(collect(l, methods, {b}));
  }
  std::ofstream csv(c.out + "/noise.csv");
  csv << "method,noise_ratio,budget_avg_rank,seed,held_out_loss,held_out_excess_loss,direction_recovery\n";
  for (std::size_t i = 0; i < levels.size(); ++i)
    for (const auto& m : methods)
      for (int s = 0; s < c.seeds; ++s) {
        const run_result& r = levels[i].at(m, b, s);
        csv << m.key << "," << fmt("%.2f", x[i]) << "," << b << "," << s << "," << fmt("%.6f", r.final_loss) << ","
            << fmt("%.6f", r.final_excess) << "," << fmt("%.4f", r.recovery) << "\n";
      }
  svg::line_chart ch = methods_chart(methods, x, [&](std::size_t m, std::size_t i) {
    return tables[i].at({m, b}).excess;
  });
  ch.title = "Noisier targets at the tightest budget (average rank " + std::to_string(b) + ")";
  ch.subtitle = "mean over " + seeds_text(c.seeds) + ", band: min\u2013max over seeds";
  ch.x_label = "target noise std / rms of the true change's effect on the output";
  ch.y_label = "held-out excess MSE (clean targets, log scale)";
  ch.log_y = true;
  ch.note = "The same tasks (base network, change, inputs) with more noise on the training and held-out targets.";
  svg::write_file(c.out + "/noise.svg", svg::render(ch));

  std::vector<std::string> columns;
  for (std::size_t i = 0; i < levels.size(); ++i)
    columns.push_back(fmt("%.2f", x[i]) + " (floor " + fmt("%.3f", levels[i].noise_floor) + ")");
  md << "### Noise at average rank " << b << ": held-out excess MSE, mean \u00b1 sd; columns: noise ratio (noise "
     << "floor)\n\n";
  md_table(md, "noise ratio", columns, pretty_names(methods),
           [&](std::size_t m, std::size_t i) { return pm(tables[i].at({m, b}).excess); });
  const std::size_t a = index_of(methods, "adalora");
  if (a < methods.size()) {
    const auto others = all_but(methods, a);
    md << "Paired by seed against " << methods[a].pretty << paired_caption << ":\n\n";
    md_table(md, "noise ratio", columns, others.second, [&](std::size_t r, std::size_t i) {
      return compare(tables[i].at({others.first[r], b}).excess, tables[i].at({a, b}).excess).text();
    });
  }
}

std::vector<method> methods_of(const std::vector<std::string>& keys) {
  std::vector<method> v;
  for (const auto& k : keys) v.push_back(find_method(k));
  return v;
}

}  // namespace
}  // namespace budget_study

int main(int argc, char** argv) try {
  using namespace budget_study;
  const options o = parse(argc, argv);
  const study_config& c = o.study;
  const std::vector<method> sweep_methods = methods_of(o.sweep_methods), noise_methods = methods_of(o.noise_methods);

  // The runs on the sweep's task (the sweep and the ablations), then one set per further noise level.
  run_set main_runs{c, {}, {}, {}, {}, 0, 0, 0};
  if (o.sweep)
    for (std::int64_t b : o.budgets)
      for (const auto& m : sweep_methods) main_runs.want(m, b);
  if (o.noise)
    for (const auto& m : noise_methods) main_runs.want(m, o.budgets.front());
  if (o.schedules)
    for (std::int64_t b : o.schedule_budgets) {
      for (const auto& m : schedule_variants(o)) main_runs.want(m, b);
      for (const auto& m : warmup_variants(o)) main_runs.want(m, b);
    }
  std::vector<run_set> noise_runs;
  if (o.noise)
    for (double level : o.noise_levels) {
      study_config nc = c;
      nc.noise_ratio = level;
      noise_runs.push_back(run_set{nc, {}, {}, {}, {}, 0, 0, 0});
      for (const auto& m : noise_methods) noise_runs.back().want(m, o.budgets.front());
    }
  std::size_t total = main_runs.jobs.size();
  for (const auto& r : noise_runs) total += r.jobs.size();

  std::filesystem::create_directories(c.out);
  std::printf("budget_sweep: %zu blocks x (q k v o up down), d_model %zu, d_ff %zu, %zu heads, %zu matrices; %s\n",
              c.shape.blocks, c.shape.d_model, c.shape.d_ff, c.shape.heads, c.shape.matrices(),
              seeds_text(c.seeds).c_str());
  std::printf("true ranks (block: q k v o up down):");
  for (std::size_t m = 0; m < c.true_rank.size(); ++m)
    std::printf("%s%d", m % projections_per_block == 0 ? (m ? " | " : " ") : " ", c.true_rank[m]);
  std::printf("\n%zu runs of %lld steps\n", total, (long long)c.steps);
  std::fflush(stdout);
  const auto start = std::chrono::steady_clock::now();
  main_runs.run();
  for (auto& r : noise_runs) r.run();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  double run_seconds = main_runs.run_seconds;
  for (const auto& r : noise_runs) run_seconds += r.run_seconds;

  const int true_total = std::accumulate(c.true_rank.begin(), c.true_rank.end(), 0);
  std::ostringstream md;
  md << "<!-- written by budget_sweep (scripts/budget-sweep.sh); do not edit by hand -->\n";
  md << "Task: " << c.shape.blocks << " blocks, d_model " << c.shape.d_model << ", d_ff " << c.shape.d_ff << ", "
     << c.shape.matrices() << " matrices, total true rank " << true_total << " (strength of the k-th direction of a "
     << "matrix " << fmt("%.2f", c.change_scale) << " \u00b7 " << fmt("%.2f", c.decay) << "^k), noise ratio "
     << fmt("%.2f", c.noise_ratio) << "; " << c.steps << " steps of " << c.batch << " sequences, lr " << fmt("%g", c.lr)
     << " decayed linearly, AdaLoRA from init_r " << c.init_r << " with tinit " << c.tinit << ", tfinal " << c.tfinal
     << ", deltaT " << c.deltaT << ", orth_reg_weight " << fmt("%g", c.orth_reg_weight) << "; one-shot: ranks fixed "
     << "at step " << c.tinit + 1 << "; " << seeds_text(c.seeds) << ". Base network "
     << fmt("%.4f", main_runs.base_loss) << ", noise floor " << fmt("%.4f", main_runs.noise_floor)
     << " (held-out MSE, mean over seeds).\n\n";
  if (o.sweep) report_sweep(o, main_runs, sweep_methods, md);
  if (o.schedules && !o.schedule_budgets.empty()) report_schedules(o, main_runs, md);
  if (o.noise) {
    std::vector<run_set> levels{main_runs};
    levels.insert(levels.end(), noise_runs.begin(), noise_runs.end());
    std::sort(levels.begin(), levels.end(),
              [](const run_set& a, const run_set& b) { return a.c.noise_ratio < b.c.noise_ratio; });
    report_noise(o, levels, noise_methods, md);
  }
  std::ofstream(c.out + "/summary.md") << md.str();
  std::printf("\n%s", md.str().c_str());
  std::printf("wrote %s/summary.md, CSV files and SVG pictures: %zu runs in %.1f s (%.1f s of runs, %.2f s per run)\n",
              c.out.c_str(), total, seconds, run_seconds, run_seconds / double(std::max<std::size_t>(1, total)));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "\nbudget_sweep: %s\n", e.what());
  return 1;
}
