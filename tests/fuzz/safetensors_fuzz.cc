// Fuzzes the safetensors reader (common/core/safetensors.h). Any byte string
// is either refused with a status, or it is a file whose every tensor can be
// read and converted, and which the writer turns back into a file that reads
// as the same tensors and metadata.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include "common/core/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

using fedtune::fuzz::Check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedtune;
  const auto header = ParseSafetensorsHeader(std::as_bytes(std::span(data, size)));
  auto file = SafetensorsFile::FromBytes(std::string(reinterpret_cast<const char*>(data), size));
  fedtune::fuzz::Report("safetensors", file.status());
  Check(header.ok() == file.ok(), "ParseSafetensorsHeader and FromBytes agree");
  if (!file.ok()) return 0;

  for (const TensorEntry& e : file->entries()) {
    Check(file->Bytes(e).size() == e.end - e.begin);
    auto t = file->Read(e.name);
    Check(t.ok());
    auto numel = NumElements(t->shape);
    Check(numel.ok() && static_cast<uint64_t>(*numel) * DTypeSize(t->dtype) == t->data.size());
    auto floats = t->ToFloats();
    Check(floats.ok() == (t->dtype != DType::kBool));
    if (floats.ok()) Check(floats->size() == static_cast<size_t>(*numel));
  }
  const TensorMap all = file->ReadAll();

  // The writer refuses names the reader accepts (""), and that is a refusal,
  // not a finding; what it writes must read back as what it was given.
  auto again = SerializeSafetensors(all, file->metadata());
  if (!again.ok()) return 0;
  auto reread = SafetensorsFile::FromBytes(*std::move(again));
  Check(reread.ok(), "what SerializeSafetensors writes reads back");
  Check(reread->ReadAll() == all, "tensors survive a write and a read");
  Check(reread->metadata() == file->metadata(), "metadata survives a write and a read");
  return 0;
}
