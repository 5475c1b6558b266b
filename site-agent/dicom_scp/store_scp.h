// A DICOM C-STORE SCP that receives radiographs from the hospital's PACS or
// modalities and ingests them on arrival (filters, de-identification, cache),
// exactly as `fedtune-site ingest` does for a folder.
//
// - Listens on one configured IPv4 address (127.0.0.1 by default), not on
//   every interface: fedtune binds the socket itself and hands each accepted
//   connection to DCMTK's association layer, served by a DcmBaseSCPPool of
//   worker threads (at most max_associations at once).
// - Accepts only the CR and DX image storage SOP classes (plus Verification
//   for C-ECHO), in every transfer syntax ingest can decode; anything else is
//   refused during association negotiation.
// - The calling AE title must be on the allow-list; the peer address on
//   allowed_hosts when that list is set (checked before any DICOM is read).
//   The list is required when the address is not loopback.
// - One peer cannot stall the others: the listener only accepts and waits
//   (poll) until a connection's whole A-ASSOCIATE-RQ has arrived (at most
//   64 KiB, within the ACSE timeout from connecting, else it is closed), so
//   reading it never blocks; negotiation and everything after it run on a
//   worker. At most max_pending_connections wait; a new one beyond that
//   closes the one that has waited longest.
// - An object larger than [ingest] max_file_mb is cut off while it arrives
//   (the association is aborted); with less than min_free_bytes free on the
//   incoming or workspace disk, stores are answered 0xA700 (out of
//   resources) and nothing is written.
// - A file is answered "success" only once it is on disk under its final
//   name in incoming_dir; a failed write is answered 0xA700 (out of
//   resources). Received files hold identifiable data until ingested: they
//   are deleted once ingested, and deleted when quarantined too unless
//   keep_quarantined: then they wait in incoming_dir/quarantine (0700) for
//   review and are purged after quarantine_retention_days
//   (kept_quarantine.h). Files left by a stopped daemon are ingested when it
//   starts again; nothing is lost.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "site-agent/ingest/ingest.h"

namespace fedtune::scp {

struct StoreScpOptions {
  std::string address = "127.0.0.1";  // IPv4 address to listen on ("0.0.0.0": every interface)
  int port = 11112;                    // 0: any free port (see StoreScp::port())
  std::string ae_title = "FEDTUNE";    // the called AE title senders must use
  std::vector<std::string> allowed_calling_aes;  // must not be empty
  std::vector<std::string> allowed_hosts;        // IPv4 addresses; empty: any host that can reach `address`
  int max_associations = 8;
  int max_pending_connections = 32;            // connected, association request still arriving
  int64_t min_free_bytes = int64_t{1} << 30;   // free disk below this: stores refused with 0xA700
  std::string incoming_dir;  // received, not yet ingested (identifiable; stays on this host)
  bool keep_quarantined = false;
  double quarantine_retention_days = 7;
  int acse_timeout_seconds = 30;
  int dimse_timeout_seconds = 60;
};

// Checks options before anything is bound: empty allow-list, bad address,
// AE titles longer than 16 characters, ...
absl::Status ValidateStoreScpOptions(const StoreScpOptions& options);

struct StoreScpCounters {
  int64_t associations = 0;  // association requests read (negotiation may still refuse them)
  int64_t refused = 0;       // host, calling or called AE not allowed, every worker busy, or a
                             // connection closed before its association request arrived
  int64_t received = 0;              // C-STORE requests answered with success
  int64_t store_failures = 0;        // not kept: cut off, too large, low disk or a failed write
  int64_t ingested = 0;
  int64_t already_done = 0;
  int64_t quarantined = 0;
  int64_t ingest_errors = 0;         // site-side problems; the file stays queued
};

class StoreScp {
 public:
  // Binds, starts the listener and the ingest thread, and queues files left
  // in incoming_dir by an earlier run. `ingest` is the site's ingest
  // configuration (workspace, filters, labels, split); quarantined files are
  // retried when sent again.
  static absl::StatusOr<std::unique_ptr<StoreScp>> Start(const StoreScpOptions& options,
                                                         const ingest::IngestOptions& ingest);
  ~StoreScp();  // Stop()
  StoreScp(const StoreScp&) = delete;
  StoreScp& operator=(const StoreScp&) = delete;

  int port() const;
  StoreScpCounters Counters() const;
  // Files received and not yet ingested.
  int64_t Pending() const;
  // Stops accepting, lets open associations finish (up to the DIMSE
  // timeout), ingests what was received, and returns. Idempotent.
  void Stop();

  struct Impl;

 private:
  explicit StoreScp(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedtune::scp
