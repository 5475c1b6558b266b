// Ingest throughput: files/s turning 2048 x 2048 16-bit radiographs into
// 518 x 518 cache images on every core, against python3-pydicom + numpy doing
// the same decode + LUTs + resize in the same invocation.
//
//   ingest_throughput [--files N] [--source-size PX] [--size PX] [--style plain|mono1-rle|inverse-jpegls]
//                     [--threads N] [--python PATH] [--no-python]
//
// Prints decode+resize files/s for both, and full `ingest` files/s (hashing,
// filters, de-identification, de-identified copies, index) for fedtune,
// without and with the search for burned-in text.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcfilefo.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "site-agent/ingest/ingest.h"
#include "site-agent/ingest/pixels.h"
#include "site-agent/ingest/synth.h"
#include "tests/testing/run_command.h"

namespace fi = fedtune::ingest;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
  int files = 48, source_size = 2048, size = 518, threads = 0;
  std::string style = "plain", python = FEDTUNE_PYTHON3;
  bool run_python = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--files") files = std::stoi(value());
    else if (a == "--source-size") source_size = std::stoi(value());
    else if (a == "--size") size = std::stoi(value());
    else if (a == "--style") style = value();
    else if (a == "--threads") threads = std::stoi(value());
    else if (a == "--python") python = value();
    else if (a == "--no-python") run_python = false;
    else {
      std::cerr << "usage: ingest_throughput [--files N] [--source-size PX] [--size PX] "
                   "[--style plain|mono1-rle|inverse-jpegls] [--threads N] [--python PATH] [--no-python]\n";
      return a == "--help" ? 0 : 2;
    }
  }
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const std::string dir = "/tmp/fedtune_ingest_bench_" + std::to_string(getpid());
  fi::SynthOptions so;
  so.site = "BENCH";
  so.patients = files;
  so.max_studies_per_patient = 1;
  so.image_size = source_size;
  so.style.bits_stored = 16;
  if (style == "mono1-rle") {
    so.style.monochrome1 = true;
    so.style.compression = "rle";
  } else if (style == "inverse-jpegls") {
    so.style.rescale_slope = -1;
    so.style.rescale_intercept = 65535;
    so.style.compression = "jpegls";
  }
  auto written = fi::WriteSyntheticSite(so, dir + "/pacs");
  if (!written.ok()) {
    std::cerr << written.status() << "\n";
    return 1;
  }

  // The files just written are flushed first, so that their write-back does
  // not compete with the runs measured below.
  ::sync();

  // fedtune: decode + resize on `threads` threads.
  std::atomic<size_t> next{0};
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (size_t i = next++; i < written->files.size(); i = next++) {
        DcmFileFormat f;
        if (f.loadFile(written->files[i].c_str()).bad()) std::abort();
        auto img = fi::DecodeGray(*f.getDataset());
        if (!img.ok()) std::abort();
        volatile auto sink = fi::FitSquare(*img, size, fi::FitMode::kPad).pixels[0];
        (void)sink;
      }
    });
  }
  for (auto& th : pool) th.join();
  const double cpp_decode = written->files.size() /
                            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // fedtune: the whole ingest, without and with the search for burned-in
  // text (the default), each into a fresh workspace.
  auto full_ingest = [&](fi::BurnedInMode mode, const std::string& name) {
    fi::IngestOptions io;
    io.workspace = dir + "/workspace-" + name;
    io.image_size = size;
    io.threads = threads;
    io.filters.min_rows = io.filters.min_columns = 16;
    io.burned_in.mode = mode;
    auto summary = fi::IngestDirectory(dir + "/pacs", io);
    if (!summary.ok()) std::cerr << summary.status() << "\n";
    return summary.ok() ? summary->ingested / summary->seconds : 0;
  };
  const double cpp_ingest = full_ingest(fi::BurnedInMode::kOff, "off");
  const double cpp_ingest_text = full_ingest(fi::BurnedInMode::kQuarantine, "text");

  double py = 0;
  if (run_python) {
    std::string cmd = python + " " + FEDTUNE_SOURCE_DIR + "/tests/bench/ingest_throughput.py " +
                      std::to_string(size) + " " + std::to_string(threads);
    for (const auto& f : written->files) cmd += " " + f;
    std::string out;
    fedtune::testing::RunCommand(cmd, &out);
    try {
      py = nlohmann::json::parse(out.substr(out.rfind('{')))["files_per_second"].get<double>();
    } catch (const std::exception&) {
      std::cerr << "python reference failed:\n" << out << "\n";
    }
  }
  std::printf("%d files %dx%d 16-bit (%s) -> %dx%d, %d threads\n", static_cast<int>(written->files.size()),
              source_size, source_size, style.c_str(), size, size, threads);
  std::printf("decode+resize  fedtune %.2f files/s   pydicom+numpy %.2f files/s   ratio %.2f\n", cpp_decode, py,
              py > 0 ? cpp_decode / py : 0.0);
  std::printf("full ingest    fedtune %.2f files/s (hash, filters, de-identification, copies, index)\n", cpp_ingest);
  std::printf("  + text search fedtune %.2f files/s ([deid] burned_in = \"quarantine\", the default; %.0f ms per file "
              "more on %d threads)\n",
              cpp_ingest_text, cpp_ingest_text > 0 && cpp_ingest > 0 ? 1000.0 * threads * (1 / cpp_ingest_text - 1 / cpp_ingest) : 0.0,
              threads);
  fs::remove_all(dir);
  return 0;
}
