// Burned-in text detection: how much of the text `fedtune-site synth` prints
// into radiographs (names, birth dates, record numbers) the ingest's
// detector finds, how many clean images (with and without laterality
// markers) it flags, and its time per image.
//
//   burned_in_detection [--patients N] [--size PX] [--fraction F] [--seed S] [--threads N]
//                       [--style plain|mono1-rle] [--json]
//
// An image with printed PHI counts as caught when the detector finds text
// in it (what quarantine needs); a printed line counts as found when a
// detected box overlaps it, and as covered by the share of its pixels the
// redaction boxes (detected boxes grown by the ingest's margin) black out.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcfilefo.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "site-agent/ingest/burned_in.h"
#include "site-agent/ingest/pixels.h"
#include "site-agent/ingest/synth.h"

namespace fi = fedtune::ingest;
namespace fs = std::filesystem;

namespace {

int64_t Overlap(const fi::PixelBox& a, const fi::PixelBox& b) {
  const int64_t w = std::min(a.x + a.width, b.x + b.width) - std::max(a.x, b.x);
  const int64_t h = std::min(a.y + a.height, b.y + b.height) - std::max(a.y, b.y);
  return w > 0 && h > 0 ? w * h : 0;
}

// Pixels of `line` inside the union of `boxes`.
int64_t Covered(const fi::PixelBox& line, const std::vector<fi::PixelBox>& boxes) {
  int64_t covered = 0;
  for (int y = line.y; y < line.y + line.height; ++y) {
    for (int x = line.x; x < line.x + line.width; ++x) {
      for (const fi::PixelBox& b : boxes) {
        if (x >= b.x && x < b.x + b.width && y >= b.y && y < b.y + b.height) {
          ++covered;
          break;
        }
      }
    }
  }
  return covered;
}

}  // namespace

int main(int argc, char** argv) {
  int patients = 60, size = 1024, threads = 0;
  double fraction = 0.5;
  uint64_t seed = 7;
  std::string style = "plain";
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : "0"; };
    if (a == "--patients") patients = std::stoi(value());
    else if (a == "--size") size = std::stoi(value());
    else if (a == "--fraction") fraction = std::stod(value());
    else if (a == "--seed") seed = std::stoull(value());
    else if (a == "--threads") threads = std::stoi(value());
    else if (a == "--style") style = value();
    else if (a == "--json") json = true;
    else {
      std::cerr << "usage: burned_in_detection [--patients N] [--size PX] [--fraction F] [--seed S] [--threads N] "
                   "[--style plain|mono1-rle] [--json]\n";
      return a == "--help" ? 0 : 2;
    }
  }
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const std::string dir = "/tmp/fedtune_burned_in_bench_" + std::to_string(getpid());
  fi::SynthOptions so;
  so.site = "BENCH";
  so.patients = patients;
  so.image_size = size;
  so.seed = seed;
  so.burned_in_fraction = fraction;
  so.markers = true;
  if (style == "mono1-rle") {
    so.style.monochrome1 = true;
    so.style.bits_stored = 10;
    so.style.compression = "rle";
  }
  auto synth = fi::WriteSyntheticSite(so, dir);
  if (!synth.ok()) {
    std::cerr << synth.status() << "\n";
    return 1;
  }
  std::map<std::string, std::vector<fi::BurnedInText>> printed;
  for (const fi::BurnedInText& t : synth->burned_in) printed[t.image_id].push_back(t);
  auto detector = fi::TextDetector::Open(fi::BurnedInOptions{});
  if (!detector.ok()) {
    std::cerr << detector.status() << "\n";
    return 1;
  }
  // Decoded first, so the timing is the detector's alone.
  std::vector<fi::GrayImage> images(synth->files.size());
  for (size_t i = 0; i < synth->files.size(); ++i) {
    DcmFileFormat f;
    if (f.loadFile(synth->files[i].c_str()).bad()) return 1;
    auto g = fi::DecodeGray(*f.getDataset());
    if (!g.ok()) return 1;
    images[i] = std::move(*g);
  }
  std::vector<fi::TextFound> found(images.size());
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (size_t i = next++; i < images.size(); i = next++) {
        auto r = (*detector)->Find(images[i]);
        if (!r.ok()) failed = true;
        else found[i] = std::move(*r);
      }
    });
  }
  for (auto& t : pool) t.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (failed) return 1;

  int phi_images = 0, phi_caught = 0, clean = 0, clean_flagged = 0, phi_lines = 0, lines_found = 0;
  int64_t line_pixels = 0, pixels_covered = 0;
  std::map<std::string, std::pair<int, int>> by_kind;  // kind -> (found, printed)
  for (size_t i = 0; i < images.size(); ++i) {
    const std::string id = fs::path(synth->files[i]).stem().string();
    bool has_phi = false;
    const std::vector<fi::PixelBox> redaction = fi::Grow(found[i].text, std::max(2, size / 128), size, size);
    for (const fi::BurnedInText& t : printed[id]) {
      if (t.kind == "marker") continue;
      has_phi = true;
      ++phi_lines;
      bool hit = false;
      for (const fi::PixelBox& b : found[i].text) hit = hit || Overlap(b, t.box) > 0;
      lines_found += hit;
      by_kind[t.kind].first += hit;
      ++by_kind[t.kind].second;
      line_pixels += int64_t{t.box.width} * t.box.height;
      pixels_covered += Covered(t.box, redaction);
    }
    if (has_phi) {
      ++phi_images;
      phi_caught += !found[i].text.empty();
    } else {
      ++clean;
      clean_flagged += !found[i].text.empty();
    }
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  auto pct = [](double a, double b) { return b > 0 ? 100.0 * a / b : 0.0; };
  nlohmann::json out = {
      {"images", images.size()},           {"size", size},
      {"style", style},                    {"threads", threads},
      {"phi_images", phi_images},          {"phi_images_caught_pct", pct(phi_caught, phi_images)},
      {"phi_lines", phi_lines},            {"phi_lines_found_pct", pct(lines_found, phi_lines)},
      {"phi_pixels_covered_pct", pct(static_cast<double>(pixels_covered), static_cast<double>(line_pixels))},
      {"clean_images", clean},             {"clean_flagged_pct", pct(clean_flagged, clean)},
      {"ms_per_image", 1000.0 * seconds * threads / std::max<size_t>(1, images.size())},
      {"images_per_s", images.size() / seconds}};
  for (const auto& [kind, fp] : by_kind) out["found_pct_" + kind] = pct(fp.first, fp.second);
  if (json) {
    std::cout << out.dump() << "\n";
  } else {
    std::cout << out.dump(2) << "\n";
  }
  return 0;
}
