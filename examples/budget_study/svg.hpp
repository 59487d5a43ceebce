// budget_study: a few dependency-free SVG charts (line charts with bands, heatmaps) for the study's pictures.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace budget_study::svg {

inline constexpr const char* font = "DejaVu Sans, Helvetica, Arial, sans-serif";

/// Escapes text for SVG.
inline std::string escape(const std::string& s) {
  std::string r;
  for (char c : s) {
    switch (c) {
      case '&': r += "&amp;"; break;
      case '<': r += "&lt;"; break;
      case '>': r += "&gt;"; break;
      case '"': r += "&quot;"; break;
      default: r += c;
    }
  }
  return r;
}

/// The lines of a text, split at newlines; none for an empty text.
inline std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < s.size()) {
    const std::size_t end = s.find('\n', start);
    lines.push_back(s.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return lines;
}

inline std::string num(double v, int precision = 2) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", precision, v);
  return buf;
}

/// A tick label: as few digits as the step between ticks needs.
inline std::string tick_label(double v, double step) {
  if (v == 0.0) return "0";
  const double a = std::abs(v);
  if (a >= 1e5 || a < 1e-3) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.0e", v);
    return buf;
  }
  int digits = std::max(0, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
  return num(v, digits);
}

inline std::string text(double x, double y, const std::string& s, int size = 12, const char* anchor = "middle",
                        const std::string& extra = "") {
  std::ostringstream o;
  o << "<text x=\"" << num(x, 1) << "\" y=\"" << num(y, 1) << "\" font-size=\"" << size << "\" text-anchor=\""
    << anchor << "\" " << extra << ">" << escape(s) << "</text>\n";
  return o.str();
}

/// Ticks at 1, 2 or 5 × 10ᵏ spaced values covering [lo, hi].
inline std::vector<double> nice_ticks(double lo, double hi, int target = 6) {
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + 1e-9 * step; v += step) t.push_back(v);
  return t;
}

/// One line of a chart, with an optional band [lo, hi] drawn behind it.
struct series {
  std::string label;
  std::string color;
  std::vector<double> x, y;
  std::vector<double> lo, hi;  // empty: no band
  bool dashed = false;
  bool step_shape = false;  // draw as a staircase (for integer quantities such as budgets)
  double width = 2.2;
};

struct line_chart {
  std::string title, subtitle, x_label, y_label;
  std::vector<series> lines;
  bool log_y = false;
  double y_min = std::numeric_limits<double>::quiet_NaN(), y_max = std::numeric_limits<double>::quiet_NaN();
  int width = 760, height = 460;
  std::string note;  // small text under the plot area
};

inline std::string render(const line_chart& c) {
  const auto note_lines = split_lines(c.note);
  const double left = 78, right = 24, top = c.subtitle.empty() ? 52 : 70;
  const double bottom = 58 + 16.0 * static_cast<double>(note_lines.size()) + (note_lines.empty() ? 0 : 4);
  const double pw = c.width - left - right, ph = c.height - top - bottom;
  double x0 = std::numeric_limits<double>::max(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const auto& s : c.lines) {
    for (double v : s.x) x0 = std::min(x0, v), x1 = std::max(x1, v);
    auto take = [&](const std::vector<double>& ys) {
      for (double v : ys)
        if (std::isfinite(v) && (!c.log_y || v > 0)) y0 = std::min(y0, v), y1 = std::max(y1, v);
    };
    take(s.y), take(s.lo), take(s.hi);
  }
  if (!std::isnan(c.y_min)) y0 = c.y_min;
  if (!std::isnan(c.y_max)) y1 = c.y_max;
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + 1;
  std::vector<double> yticks;
  std::vector<std::string> ylabels;
  if (c.log_y) {
    const double l0 = std::floor(std::log10(y0)), l1 = std::ceil(std::log10(y1));
    std::vector<double> cand;
    for (double e = l0; e <= l1; ++e)
      for (double m : {1.0, 2.0, 5.0}) cand.push_back(m * std::pow(10.0, e));
    for (double v : cand)
      if (v >= y0 * 0.999 && v <= y1 * 1.001) yticks.push_back(v);
    if (yticks.size() < 3) {  // add finer ticks
      yticks.clear();
      for (double e = l0; e <= l1; ++e)
        for (int m = 1; m < 10; ++m) {
          const double v = m * std::pow(10.0, e);
          if (v >= y0 * 0.999 && v <= y1 * 1.001) yticks.push_back(v);
        }
    }
    for (double v : yticks) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%g", v);
      ylabels.push_back(buf);
    }
  } else {
    const double pad = 0.04 * (y1 - y0);
    if (std::isnan(c.y_min)) y0 -= pad;
    if (std::isnan(c.y_max)) y1 += pad;
    yticks = nice_ticks(y0, y1);
    for (double v : yticks) ylabels.push_back(tick_label(v, yticks.size() > 1 ? yticks[1] - yticks[0] : 1.0));
  }
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) {
    if (c.log_y) return top + ph - (std::log10(y) - std::log10(y0)) / (std::log10(y1) - std::log10(y0)) * ph;
    return top + ph - (y - y0) / (y1 - y0) * ph;
  };

  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << c.width << "\" height=\"" << c.height
    << "\" viewBox=\"0 0 " << c.width << " " << c.height << "\" font-family=\"" << font << "\">\n";
  o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o << text(c.width / 2.0, 26, c.title, 17, "middle", "font-weight=\"bold\" fill=\"#222\"");
  if (!c.subtitle.empty()) o << text(c.width / 2.0, 46, c.subtitle, 12, "middle", "fill=\"#555\"");
  // grid and axes
  for (std::size_t i = 0; i < yticks.size(); ++i) {
    const double y = py(yticks[i]);
    o << "<line x1=\"" << num(left, 1) << "\" y1=\"" << num(y, 1) << "\" x2=\"" << num(left + pw, 1) << "\" y2=\""
      << num(y, 1) << "\" stroke=\"#e4e4e4\"/>\n";
    o << text(left - 8, y + 4, ylabels[i], 11, "end", "fill=\"#444\"");
  }
  const auto xticks = nice_ticks(x0, x1, 7);
  for (double v : xticks) {
    const double x = px(v);
    o << "<line x1=\"" << num(x, 1) << "\" y1=\"" << num(top, 1) << "\" x2=\"" << num(x, 1) << "\" y2=\""
      << num(top + ph, 1) << "\" stroke=\"#f0f0f0\"/>\n";
    o << "<line x1=\"" << num(x, 1) << "\" y1=\"" << num(top + ph, 1) << "\" x2=\"" << num(x, 1) << "\" y2=\""
      << num(top + ph + 5, 1) << "\" stroke=\"#444\"/>\n";
    o << text(x, top + ph + 19, tick_label(v, xticks.size() > 1 ? xticks[1] - xticks[0] : 1.0), 11, "middle",
              "fill=\"#444\"");
  }
  o << "<rect x=\"" << num(left, 1) << "\" y=\"" << num(top, 1) << "\" width=\"" << num(pw, 1) << "\" height=\""
    << num(ph, 1) << "\" fill=\"none\" stroke=\"#444\"/>\n";
  o << text(left + pw / 2, top + ph + 40, c.x_label, 13, "middle", "fill=\"#222\"");
  o << text(18, top + ph / 2, c.y_label, 13, "middle",
            "fill=\"#222\" transform=\"rotate(-90 18 " + num(top + ph / 2, 1) + ")\"");
  for (std::size_t i = 0; i < note_lines.size(); ++i)
    o << text(left, top + ph + 64 + 16.0 * static_cast<double>(i), note_lines[i], 11, "start", "fill=\"#666\"");

  o << "<defs><clipPath id=\"plot\"><rect x=\"" << num(left, 1) << "\" y=\"" << num(top, 1) << "\" width=\""
    << num(pw, 1) << "\" height=\"" << num(ph, 1) << "\"/></clipPath></defs>\n<g clip-path=\"url(#plot)\">\n";
  auto clamp_y = [&](double v) { return c.log_y ? std::max(v, y0 * 1e-3) : v; };
  for (const auto& s : c.lines)
    if (!s.lo.empty() && s.lo.size() == s.x.size() && s.hi.size() == s.x.size()) {
      o << "<polygon fill=\"" << s.color << "\" fill-opacity=\"0.16\" stroke=\"none\" points=\"";
      for (std::size_t i = 0; i < s.x.size(); ++i) o << num(px(s.x[i]), 1) << "," << num(py(clamp_y(s.hi[i])), 1) << " ";
      for (std::size_t i = s.x.size(); i-- > 0;) o << num(px(s.x[i]), 1) << "," << num(py(clamp_y(s.lo[i])), 1) << " ";
      o << "\"/>\n";
    }
  for (const auto& s : c.lines) {
    o << "<polyline fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"" << num(s.width, 1)
      << "\" stroke-linejoin=\"round\"" << (s.dashed ? " stroke-dasharray=\"7 5\"" : "") << " points=\"";
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      if (s.step_shape && i > 0) o << num(px(s.x[i]), 1) << "," << num(py(clamp_y(s.y[i - 1])), 1) << " ";
      o << num(px(s.x[i]), 1) << "," << num(py(clamp_y(s.y[i])), 1) << " ";
    }
    o << "\"/>\n";
  }
  o << "</g>\n";
  // legend, top right inside the plot
  double lw = 0;
  for (const auto& s : c.lines) lw = std::max(lw, 7.0 * static_cast<double>(s.label.size()));
  const double bx = left + pw - lw - 56, by = top + 10, bh = 20.0 * static_cast<double>(c.lines.size()) + 10;
  o << "<rect x=\"" << num(bx, 1) << "\" y=\"" << num(by, 1) << "\" width=\"" << num(lw + 46, 1) << "\" height=\""
    << num(bh, 1) << "\" fill=\"white\" fill-opacity=\"0.9\" stroke=\"#ccc\" rx=\"4\"/>\n";
  for (std::size_t i = 0; i < c.lines.size(); ++i) {
    const auto& s = c.lines[i];
    const double y = by + 15 + 20.0 * static_cast<double>(i);
    o << "<line x1=\"" << num(bx + 8, 1) << "\" y1=\"" << num(y, 1) << "\" x2=\"" << num(bx + 34, 1) << "\" y2=\""
      << num(y, 1) << "\" stroke=\"" << s.color << "\" stroke-width=\"" << num(s.width + 0.8, 1) << "\""
      << (s.dashed ? " stroke-dasharray=\"7 5\"" : "") << "/>\n";
    o << text(bx + 40, y + 4, s.label, 12, "start", "fill=\"#222\"");
  }
  o << "</svg>\n";
  return o.str();
}

/// One grid of a heatmap figure: rows × cols values with the text shown in each cell.
struct heatmap_panel {
  std::string title;
  std::vector<double> values;          // rows × cols
  std::vector<std::string> cell_text;  // rows × cols
  std::vector<std::string> footer;     // lines of text under the grid
};

struct heatmap_figure {
  std::string title, subtitle, note;
  std::vector<std::string> row_labels, col_labels;
  std::vector<heatmap_panel> panels;
  std::vector<bool> outlined;  // rows × cols: cells drawn with a frame in every panel (may be empty)
  std::string outline_color = "#d95f02";
  std::size_t panels_per_row = 0;  // 0: all in one row
  double v_max = 1.0;
  std::string scale_label;
};

/// White → deep blue; dark cells get white text.
inline std::string blue(double t) {
  t = std::clamp(t, 0.0, 1.0);
  const int r = static_cast<int>(std::lround(247 - t * (247 - 8)));
  const int g = static_cast<int>(std::lround(251 - t * (251 - 48)));
  const int b = static_cast<int>(std::lround(255 - t * (255 - 107)));
  char buf[16];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", r, g, b);
  return buf;
}

inline std::string render(const heatmap_figure& f) {
  const std::size_t rows = f.row_labels.size(), cols = f.col_labels.size();
  const std::size_t per_row = f.panels_per_row ? std::min(f.panels_per_row, f.panels.size()) : f.panels.size();
  const std::size_t panel_rows = (f.panels.size() + per_row - 1) / std::max<std::size_t>(per_row, 1);
  const double cell = 42, gap = 44, left = 70, title_h = 44;
  const double top = (f.subtitle.empty() ? 40 : 58) + title_h;
  std::size_t footer_lines = 0;
  for (const auto& p : f.panels) footer_lines = std::max(footer_lines, p.footer.size());
  const double footer_h = 8 + 18.0 * static_cast<double>(footer_lines);
  const double panel_w = cell * static_cast<double>(cols), panel_h = cell * static_cast<double>(rows);
  const double step_y = panel_h + footer_h + title_h + 10;
  const auto note_lines = split_lines(f.note);
  const double npc = static_cast<double>(per_row);
  const int width = static_cast<int>(left + npc * panel_w + (npc - 1) * gap + 84);
  const double note_y = top + static_cast<double>(panel_rows - 1) * step_y + panel_h + footer_h + 26;
  const int height = static_cast<int>(note_y + 16.0 * static_cast<double>(note_lines.size()) + 4);
  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height << "\" viewBox=\"0 0 "
    << width << " " << height << "\" font-family=\"" << font << "\">\n";
  o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o << text(width / 2.0, 26, f.title, 17, "middle", "font-weight=\"bold\" fill=\"#222\"");
  if (!f.subtitle.empty()) o << text(width / 2.0, 46, f.subtitle, 12, "middle", "fill=\"#555\"");
  for (std::size_t p = 0; p < f.panels.size(); ++p) {
    const auto& panel = f.panels[p];
    const double x0 = left + static_cast<double>(p % per_row) * (panel_w + gap);
    const double y0 = top + static_cast<double>(p / per_row) * step_y;
    o << text(x0 + panel_w / 2, y0 - 26, panel.title, 14, "middle", "font-weight=\"bold\" fill=\"#222\"");
    for (std::size_t c = 0; c < cols; ++c)
      o << text(x0 + cell * (static_cast<double>(c) + 0.5), y0 - 8, f.col_labels[c], 12, "middle", "fill=\"#444\"");
    for (std::size_t r = 0; r < rows; ++r) {
      if (p % per_row == 0)
        o << text(x0 - 8, y0 + cell * (static_cast<double>(r) + 0.5) + 4, f.row_labels[r], 12, "end",
                  "fill=\"#444\"");
      for (std::size_t c = 0; c < cols; ++c) {
        const double v = panel.values[r * cols + c], t = v / f.v_max;
        const double x = x0 + cell * static_cast<double>(c), y = y0 + cell * static_cast<double>(r);
        o << "<rect x=\"" << num(x, 1) << "\" y=\"" << num(y, 1) << "\" width=\"" << num(cell, 1) << "\" height=\""
          << num(cell, 1) << "\" fill=\"" << blue(t) << "\" stroke=\"white\" stroke-width=\"1.5\"/>\n";
        o << text(x + cell / 2, y + cell / 2 + 4, panel.cell_text[r * cols + c], 12, "middle",
                  t > 0.55 ? "fill=\"white\"" : "fill=\"#222\"");
      }
    }
    if (!f.outlined.empty())
      for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c = 0; c < cols; ++c)
          if (f.outlined[r * cols + c])
            o << "<rect x=\"" << num(x0 + cell * static_cast<double>(c) + 1.5, 1) << "\" y=\""
              << num(y0 + cell * static_cast<double>(r) + 1.5, 1) << "\" width=\"" << num(cell - 3, 1)
              << "\" height=\"" << num(cell - 3, 1) << "\" fill=\"none\" stroke=\"" << f.outline_color
              << "\" stroke-width=\"2.5\"/>\n";
    for (std::size_t i = 0; i < panel.footer.size(); ++i)
      o << text(x0 + panel_w / 2, y0 + panel_h + 22 + 18.0 * static_cast<double>(i), panel.footer[i], 13, "middle",
                "fill=\"#222\"");
  }
  // colour scale, right of the first row of panels
  const double lx = left + npc * panel_w + (npc - 1) * gap + 22, lh = panel_h;
  o << "<defs><linearGradient id=\"scale\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">";
  for (int i = 0; i <= 4; ++i) o << "<stop offset=\"" << num(i / 4.0, 2) << "\" stop-color=\"" << blue(i / 4.0) << "\"/>";
  o << "</linearGradient></defs>\n";
  o << "<rect x=\"" << num(lx, 1) << "\" y=\"" << num(top, 1) << "\" width=\"14\" height=\"" << num(lh, 1)
    << "\" fill=\"url(#scale)\" stroke=\"#999\"/>\n";
  const auto ticks = nice_ticks(0, f.v_max, 4);
  for (double v : ticks) {
    const double y = top + lh - v / f.v_max * lh;
    o << text(lx + 19, y + 4, tick_label(v, ticks.size() > 1 ? ticks[1] - ticks[0] : 1.0), 11, "start",
              "fill=\"#444\"");
  }
  o << text(lx + 7, top + lh + 18, f.scale_label, 12, "middle", "fill=\"#444\"");
  for (std::size_t i = 0; i < note_lines.size(); ++i)
    o << text(left - 50, note_y + 16.0 * static_cast<double>(i), note_lines[i], 11, "start", "fill=\"#666\"");
  o << "</svg>\n";
  return o.str();
}

inline void write_file(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot write " + path);
  f << content;
}

}  // namespace budget_study::svg
