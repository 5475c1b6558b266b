#include "site-agent/ingest/inflation.h"

#include <zlib.h>

#include <string>
#include <vector>

namespace fedtune::ingest {

Inflation MeasureInflation(std::string_view file, int64_t limit) {
  if (file.size() < 132 || file.substr(128, 4) != "DICM") return {Inflation::kNotDeflated};
  // The file meta group: explicit VR little endian elements (0002,xxxx).
  size_t at = 132;
  std::string transfer_syntax;
  bool seen_syntax = false;
  auto u16 = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(file[i])) |
                                    static_cast<uint32_t>(static_cast<uint8_t>(file[i + 1])) << 8; };
  while (at + 8 <= file.size() && u16(at) == 0x0002) {
    const uint32_t element = u16(at + 2);
    const std::string_view vr = file.substr(at + 4, 2);
    size_t header = 8;
    uint64_t length = u16(at + 6);
    if (vr == "OB" || vr == "OD" || vr == "OF" || vr == "OL" || vr == "OV" || vr == "OW" || vr == "SQ" ||
        vr == "SV" || vr == "UC" || vr == "UN" || vr == "UR" || vr == "UT" || vr == "UV") {
      if (at + 12 > file.size()) return {Inflation::kUnfollowable};
      header = 12;
      length = u16(at + 8) | static_cast<uint64_t>(u16(at + 10)) << 16;
    }
    if (at + header + length > file.size()) return {Inflation::kUnfollowable};
    if (element == 0x0010) {
      // Two transfer syntaxes: which one a reader believes is not ours to
      // guess (DCMTK takes the first), so the caller decides as for a meta
      // group it cannot follow.
      if (seen_syntax) return {Inflation::kUnfollowable};
      seen_syntax = true;
      transfer_syntax = std::string(file.substr(at + header, length));
    }
    at += header + length;
  }
  while (!transfer_syntax.empty() && (transfer_syntax.back() == '\0' || transfer_syntax.back() == ' ')) {
    transfer_syntax.pop_back();
  }
  if (transfer_syntax.empty()) return {Inflation::kUnfollowable};  // a meta group must name it
  if (transfer_syntax != kDeflatedTransferSyntax) return {Inflation::kNotDeflated};
  z_stream z{};
  if (inflateInit2(&z, -MAX_WBITS) != Z_OK) return {Inflation::kUnfollowable};  // raw deflate (PS3.5 A.5)
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(file.data() + at));
  z.avail_in = static_cast<uInt>(file.size() - at);
  std::vector<Bytef> sink(1 << 16);
  int64_t total = 0;
  int rc = Z_OK;
  while (rc == Z_OK && total <= limit) {
    z.next_out = sink.data();
    z.avail_out = static_cast<uInt>(sink.size());
    rc = inflate(&z, Z_NO_FLUSH);
    total += static_cast<int64_t>(sink.size() - z.avail_out);
    if (rc == Z_BUF_ERROR && z.avail_in == 0) break;  // truncated: DCMTK reports that
  }
  inflateEnd(&z);
  return {Inflation::kMeasured, total};
}

}  // namespace fedtune::ingest
