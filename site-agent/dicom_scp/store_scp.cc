#include "site-agent/dicom_scp/store_scp.h"

#include <arpa/inet.h>
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dimse.h>
#include <dcmtk/dcmnet/dul.h>
#include <dcmtk/dcmnet/scppool.h>
#include <dcmtk/dcmnet/scpthrd.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/core/status.h"
#include "site-agent/dicom_scp/kept_quarantine.h"

namespace fedtune::scp {
namespace {

namespace fs = std::filesystem;

// Received files: "rx-<random>.part" while arriving, "rx-<random>.dcm" once
// complete. Names carry nothing from the file (UIDs identify patients' studies).
constexpr const char* kPartSuffix = ".part";
constexpr const char* kDoneSuffix = ".dcm";

const char* const kImageStorageClasses[] = {
    UID_ComputedRadiographyImageStorage,
    UID_DigitalXRayImageStorageForPresentation,
    UID_DigitalXRayImageStorageForProcessing,
};

// Every transfer syntax ingest decodes, in the order this SCP prefers them
// among those a sender proposes: lossless compressed first (a compressed file
// is then taken as it is, with no conversion the sender may not be able to
// do), then uncompressed (an uncompressed file is taken as it is), and lossy
// last, so that a sender is never asked to degrade an image it holds lossless.
OFList<OFString> ImageTransferSyntaxes() {
  OFList<OFString> ts;
  for (const char* uid :
       {UID_JPEGLSLosslessTransferSyntax, UID_RLELosslessTransferSyntax, UID_JPEGProcess14SV1TransferSyntax,
        UID_JPEGProcess14TransferSyntax, UID_LittleEndianExplicitTransferSyntax,
        UID_LittleEndianImplicitTransferSyntax, UID_BigEndianExplicitTransferSyntax,
        UID_DeflatedExplicitVRLittleEndianTransferSyntax, UID_JPEGLSLossyTransferSyntax,
        UID_JPEGProcess1TransferSyntax, UID_JPEGProcess2_4TransferSyntax}) {
    ts.push_back(uid);
  }
  return ts;
}

std::string RandomName() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
  return absl::StrCat("rx-", buf);
}

// An A-ASSOCIATE-RQ: PDU type 0x01, a reserved byte, a 4-byte big-endian
// length, then that many bytes. Real ones hold a few KiB (128 presentation
// contexts at most); the listening socket's receive buffer holds the limit.
constexpr size_t kPduHeader = 6;
constexpr uint32_t kMaxAssociationRequest = 64 * 1024;

// Free bytes for an unprivileged writer on the file system holding `path`.
int64_t FreeBytes(const std::string& path) {
  struct statvfs v{};
  if (::statvfs(path.c_str(), &v) != 0) return INT64_MAX;  // unknown: not a reason to refuse
  return static_cast<int64_t>(v.f_bavail) * static_cast<int64_t>(v.f_frsize);
}

std::string PeerAddress(const sockaddr_in& peer) {
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &peer.sin_addr, text, sizeof text);
  return text;
}

}  // namespace

struct StoreScp::Impl {
  StoreScpOptions o;
  ingest::IngestOptions ingest;
  int listen_fd = -1;
  int port = 0;
  T_ASC_Network* network = nullptr;
  std::unique_ptr<DcmBaseSCPPool> pool;
  std::thread acceptor;
  std::thread ingester;
  std::atomic<bool> stopping{false};
  bool stopped = false;
  bool leaked = false;  // a worker outlived Stop(): the pool and this are never freed

  std::mutex mu;
  std::condition_variable cv;
  bool arrived = true;  // scan once at start: files left by an earlier run
  bool ingest_stop = false;

  std::atomic<int64_t> associations{0}, refused{0}, received{0}, store_failures{0}, ingested{0}, already_done{0},
      quarantined{0}, ingest_errors{0};

  // Called by the workers.
  std::string NewPartPath() const { return (fs::path(o.incoming_dir) / (RandomName() + kPartSuffix)).string(); }
  // Makes a completely received file visible to the ingester; false when it
  // could not be kept (the sender is told the store failed).
  bool Complete(const std::string& part) {
    std::error_code ec;
    fs::path done = part;
    done.replace_extension(kDoneSuffix);
    const int fd = ::open(part.c_str(), O_RDONLY | O_CLOEXEC);
    const bool synced = fd >= 0 && ::fsync(fd) == 0;
    if (fd >= 0) ::close(fd);
    if (!synced) {
      fs::remove(part, ec);
      return false;
    }
    fs::rename(part, done, ec);
    if (ec) {
      fs::remove(part, ec);
      return false;
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      arrived = true;
    }
    cv.notify_all();
    return true;
  }

  // Whether both the incoming directory and the workspace have
  // min_free_bytes free; warns (at most once a minute) when not.
  bool EnoughDisk() {
    const int64_t free_bytes = std::min(FreeBytes(o.incoming_dir), FreeBytes(ingest.workspace));
    if (free_bytes >= o.min_free_bytes) return true;
    const int64_t now_s = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::steady_clock::now().time_since_epoch()).count();
    int64_t last = last_disk_warning_s.load();
    if (now_s - last >= 60 && last_disk_warning_s.compare_exchange_strong(last, now_s)) {
      spdlog::error("dicom: only {} MiB free for {} or {} (below [scp] min_free_mb = {}): stores are refused with "
                    "0xA700 (out of resources) until space is freed; senders retry later",
                    free_bytes >> 20, o.incoming_dir, ingest.workspace, o.min_free_bytes >> 20);
    }
    return false;
  }
  std::atomic<int64_t> last_disk_warning_s{-3600};

  // The socket under each association handed to a worker (DCMTK keeps it
  // private), so a worker can cut off an oversized transfer.
  void GiveSocket(const T_ASC_Association* assoc, int fd) {
    std::lock_guard<std::mutex> lock(sockets_mu);
    sockets[assoc] = fd;
  }
  int TakeSocket(const T_ASC_Association* assoc) {
    std::lock_guard<std::mutex> lock(sockets_mu);
    auto it = sockets.find(assoc);
    if (it == sockets.end()) return -1;
    const int fd = it->second;
    sockets.erase(it);
    return fd;
  }
  std::mutex sockets_mu;
  std::map<const T_ASC_Association*, int> sockets;

  void AcceptLoop();
  void IngestLoop();
  void IngestPending();
  // Deletes kept quarantined files past their retention.
  void PurgeExpired();
};

namespace {

// One association at a time, on a pool thread: DcmThreadSCP does the
// negotiation and C-ECHO; C-STORE requests are written straight to a file.
class Worker final : public DcmBaseSCPPool::DcmBaseSCPWorker, private DcmThreadSCP {
 public:
  Worker(DcmBaseSCPPool& pool, StoreScp::Impl* scp) : DcmBaseSCPWorker(pool), DcmThreadSCP(), scp_(scp) {}

  OFCondition setSharedConfig(const DcmSharedSCPConfig& config) override {
    return DcmThreadSCP::setSharedConfig(config);
  }
  OFBool busy() override { return DcmThreadSCP::isConnected(); }

 protected:
  OFCondition workerListen(T_ASC_Association* const assoc) override {
    socket_ = scp_->TakeSocket(assoc);
    return DcmThreadSCP::run(assoc);
  }

  // An object larger than the site accepts is cut off as it arrives: the
  // connection is shut down, the receive fails, nothing is kept.
  void notifyRECEIVEProgress(const unsigned long bytes) override {
    if (receiving_ && !cut_ && static_cast<int64_t>(bytes) > scp_->ingest.filters.max_file_bytes &&
        socket_ >= 0) {
      cut_ = true;
      ::shutdown(socket_, SHUT_RDWR);
    }
  }

  OFBool checkCalledAETitleAccepted(const OFString& called) override {
    if (called == scp_->o.ae_title.c_str()) return OFTrue;
    ++scp_->refused;
    spdlog::warn("dicom: refused an association addressed to AE \"{}\" (this SCP is \"{}\")", called.c_str(),
                 scp_->o.ae_title);
    return OFFalse;
  }

  OFBool checkCallingAETitleAccepted(const OFString& calling) override {
    for (const auto& ae : scp_->o.allowed_calling_aes) {
      if (calling == ae.c_str()) return OFTrue;
    }
    ++scp_->refused;
    // AE titles name devices, not patients.
    spdlog::warn("dicom: refused an association from calling AE \"{}\" (not in [scp] allowed_calling_aes)",
                 calling.c_str());
    return OFFalse;
  }

  OFCondition handleIncomingCommand(T_DIMSE_Message* message, const DcmPresentationContextInfo& info) override {
    if (message->CommandField != DIMSE_C_STORE_RQ) return DcmThreadSCP::handleIncomingCommand(message, info);
    T_DIMSE_C_StoreRQ& request = message->msg.CStoreRQ;
    if (!scp_->EnoughDisk()) {
      // The dataset is read off the wire (the association stays usable) and
      // dropped; the sender is told to retry later.
      receiving_ = true;
      OFCondition cond = receiveSTORERequest(request, info.presentationContextID, "/dev/null");
      receiving_ = false;
      ++scp_->store_failures;
      if (cond.bad()) return cond;
      return sendSTOREResponse(info.presentationContextID, request, STATUS_STORE_Refused_OutOfResources);
    }
    const std::string part = scp_->NewPartPath();
    receiving_ = true;
    cut_ = false;
    OFCondition cond = receiveSTORERequest(request, info.presentationContextID, part.c_str());
    receiving_ = false;
    if (cond.bad()) {
      // The connection broke, the data was malformed or too large: nothing was
      // stored and the sender knows it (no success response).
      std::error_code ec;
      fs::remove(part, ec);
      ++scp_->store_failures;
      if (cut_) {
        spdlog::warn("dicom: cut off a C-STORE above {} MiB ([ingest] max_file_mb); the association was aborted",
                     scp_->ingest.filters.max_file_bytes >> 20);
      } else {
        spdlog::warn("dicom: a C-STORE was not received completely: {}", cond.text());
      }
      return cond;
    }
    Uint16 status = STATUS_Success;
    if (scp_->Complete(part)) {
      ++scp_->received;
    } else {
      status = STATUS_STORE_Refused_OutOfResources;
      ++scp_->store_failures;
      spdlog::error("dicom: cannot keep a received file in {} (disk full?); the sender was told", scp_->o.incoming_dir);
    }
    return sendSTOREResponse(info.presentationContextID, request, status);
  }

 private:
  StoreScp::Impl* scp_;
  int socket_ = -1;
  bool receiving_ = false;
  bool cut_ = false;
};

// Where a waiting connection's association request stands.
enum class RequestState { kArriving, kComplete, kRefused };

// Looks at (never consumes) what a connection has sent. Once the PDU header
// names the request's length, the socket's low-water mark is raised to it so
// that poll wakes the listener only when the whole request is there (a
// trickling peer costs one wake-up, not one per byte).
RequestState PeekRequest(int fd, size_t& need, std::string& why) {
  unsigned char head[kPduHeader];
  const ssize_t n = ::recv(fd, head, sizeof head, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) {
    why = "closed";
    return RequestState::kRefused;
  }
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return RequestState::kArriving;
    why = std::strerror(errno);
    return RequestState::kRefused;
  }
  if (head[0] != 0x01) {
    why = "it did not start with an association request";
    return RequestState::kRefused;
  }
  if (static_cast<size_t>(n) < kPduHeader) return RequestState::kArriving;
  const uint32_t length = (uint32_t{head[2]} << 24) | (uint32_t{head[3]} << 16) | (uint32_t{head[4]} << 8) | head[5];
  if (length > kMaxAssociationRequest) {
    why = absl::StrCat("its association request of ", length, " bytes is above ", kMaxAssociationRequest);
    return RequestState::kRefused;
  }
  if (need != kPduHeader + length) {
    need = kPduHeader + length;
    const int lowat = static_cast<int>(need);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat);
  }
  int available = 0;
  if (::ioctl(fd, FIONREAD, &available) != 0) available = 0;
  return static_cast<size_t>(available) >= need ? RequestState::kComplete : RequestState::kArriving;
}

}  // namespace

// The pool, fed by fedtune's own listener instead of DcmBaseSCPPool::listen()
// (which binds every interface).
class ScpPool final : public DcmBaseSCPPool {
 public:
  explicit ScpPool(StoreScp::Impl* scp) : scp_(scp) {}

  // The configuration every worker shares, taken once it is complete.
  void FreezeConfig() { shared_ = DcmSharedSCPConfig(getConfig()); }

  // Reads the association request on an accepted connection (already whole
  // in the socket's buffer, so this does not wait for the peer) and hands it
  // to a worker, which negotiates, or rejects it when every worker is busy.
  void Serve(int fd) {
    T_ASC_Association* assoc = nullptr;
    // DUL takes a connection from this global instead of accepting one
    // itself; only this (the listener) thread touches it. Once DUL holds the
    // socket, the association owns it and closes it.
    dcmExternalSocketHandle.set(fd);
    OFCondition cond = ASC_receiveAssociation(scp_->network, &assoc, getConfig().getMaxReceivePDULength(), nullptr,
                                              nullptr, OFFalse, DUL_BLOCK,
                                              static_cast<int>(getConfig().getConnectionTimeout()));
    dcmExternalSocketHandle.set(DCMNET_INVALID_SOCKET);
    if (cond.bad()) {
      if (assoc != nullptr) dropAndDestroyAssociation(assoc);
      return;
    }
    ++scp_->associations;
    scp_->GiveSocket(assoc, fd);
    cond = runAssociation(assoc, shared_);
    if (cond.bad()) {
      scp_->TakeSocket(assoc);
      ++scp_->refused;
      spdlog::warn("dicom: refused an association: {}", cond == NET_EC_SCPBusy
                                                            ? "every worker is busy ([scp] max_associations)"
                                                            : cond.text());
      rejectAssociation(assoc, cond == NET_EC_SCPBusy ? ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED
                                                      : ASC_REASON_SP_PRES_TEMPORARYCONGESTION);
      dropAndDestroyAssociation(assoc);
    }
  }

 protected:
  DcmBaseSCPWorker* createSCPWorker() override { return new Worker(*this, scp_); }

 private:
  StoreScp::Impl* scp_;
  DcmSharedSCPConfig shared_;
};

void StoreScp::Impl::AcceptLoop() {
  auto* scp_pool = static_cast<ScpPool*>(pool.get());
  // Accepted connections whose association request has not wholly arrived:
  // a client that connects and stays silent (a TCP health check, a port
  // scan) or trickles its request holds no one up; it is closed once the
  // ACSE timeout has passed since it connected.
  struct Waiting {
    int fd;
    std::chrono::steady_clock::time_point since;
    size_t need = kPduHeader;
    // Under memory pressure the kernel may report a socket readable below
    // its low-water mark: such a connection sits out the next polls for a
    // moment rather than wake the listener in a loop.
    std::chrono::steady_clock::time_point resume{};
  };
  std::deque<Waiting> waiting;
  const auto acse = std::chrono::seconds(o.acse_timeout_seconds);
  int64_t evicted = 0;
  // A peer that left on its own (a TCP health check) was not refused.
  auto drop = [&](const Waiting& w, const std::string& why) {
    if (why != "closed") {
      ++refused;
      spdlog::warn("dicom: closed a connection: {}", why);
    }
    ::close(w.fd);
  };
  while (!stopping) {
    std::vector<pollfd> fds{{listen_fd, POLLIN, 0}};
    const auto before = std::chrono::steady_clock::now();
    for (const auto& w : waiting) {
      // A negative fd is left out by poll (its revents stay 0).
      fds.push_back({w.resume > before ? -1 : w.fd, POLLIN | POLLRDHUP, 0});
    }
    if (::poll(fds.data(), fds.size(), 200) < 0) continue;
    const auto now = std::chrono::steady_clock::now();
    std::deque<Waiting> still;
    for (size_t k = 1; k < fds.size(); ++k) {
      Waiting w = waiting[k - 1];
      if (fds[k].revents != 0) {
        std::string why;
        const RequestState state = PeekRequest(w.fd, w.need, why);
        if (state == RequestState::kComplete) {
          // DUL's reads from here on wait for any data again.
          const int lowat = 1;
          ::setsockopt(w.fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat);
          scp_pool->Serve(w.fd);
          continue;
        }
        if (state == RequestState::kRefused) {
          drop(w, why);
          continue;
        }
        if ((fds[k].revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) {
          drop(w, "closed");  // went away part-way
          continue;
        }
        w.resume = now + std::chrono::milliseconds(50);
      }
      if (now - w.since > acse) {
        drop(w, absl::StrCat("no complete association request within ", o.acse_timeout_seconds, " s"));
      } else {
        still.push_back(w);
      }
    }
    waiting.swap(still);
    if ((fds[0].revents & POLLIN) == 0) continue;
    sockaddr_in peer{};
    socklen_t len = sizeof peer;
    const int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
    if (fd < 0) continue;
    const std::string host = PeerAddress(peer);
    const bool allowed = o.allowed_hosts.empty() ||
                         std::find(o.allowed_hosts.begin(), o.allowed_hosts.end(), host) != o.allowed_hosts.end();
    if (!allowed) {
      ++refused;
      spdlog::warn("dicom: closed a connection from {} (not in [scp] allowed_hosts)", host);
      ::close(fd);
      continue;
    }
    const int lowat = static_cast<int>(kPduHeader);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat);
    if (waiting.size() >= static_cast<size_t>(o.max_pending_connections)) {
      // The one that has waited longest goes: a sender that is really
      // sending completes its request in milliseconds.
      ++refused;
      if (evicted++ % 100 == 0) {
        spdlog::warn("dicom: {} connections are waiting to send an association request ([scp] "
                     "max_pending_connections); closing the oldest ({} so far)",
                     waiting.size(), evicted);
      }
      ::close(waiting.front().fd);
      waiting.pop_front();
    }
    waiting.push_back({fd, now});
  }
  for (const auto& w : waiting) ::close(w.fd);
}

void StoreScp::Impl::IngestPending() {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(o.incoming_dir, ec)) {
    if (e.is_regular_file(ec) && e.path().extension() == kDoneSuffix) files.push_back(e.path().string());
  }
  if (files.empty()) return;
  std::sort(files.begin(), files.end());
  ingest::IngestOptions options = ingest;
  options.retry_quarantined = true;  // a file sent again gets another chance
  auto ingestor = ingest::Ingestor::Open(options);
  if (!ingestor.ok()) {
    ++ingest_errors;
    spdlog::error("dicom: cannot ingest received files: {} (they stay in {})", std::string(ingestor.status().message()),
                  o.incoming_dir);
    return;
  }
  // A received file is let go of only once the index rows made from it are
  // committed: a crash before that ingests it again at the next start.
  std::vector<std::pair<size_t, ingest::IngestOutcome>> outcomes;
  const absl::Status run = (*ingestor)->IngestFiles(files, ingest.threads, [&](size_t i, ingest::IngestOutcome outcome) {
    switch (outcome) {
      case ingest::IngestOutcome::kIngested: ++ingested; break;
      case ingest::IngestOutcome::kAlreadyDone: ++already_done; break;
      case ingest::IngestOutcome::kQuarantined: ++quarantined; break;
    }
    outcomes.emplace_back(i, outcome);
  });
  if (!run.ok()) {
    ++ingest_errors;
    spdlog::error("dicom: ingest stopped: {} (received files stay in {})", std::string(run.message()), o.incoming_dir);
  }
  if (auto st = (*ingestor)->Commit(); !st.ok()) {
    ++ingest_errors;
    spdlog::error("dicom: {} (received files stay in {})", std::string(st.message()), o.incoming_dir);
    return;
  }
  for (const auto& [i, outcome] : outcomes) {
    const fs::path file = files[i];
    if (outcome == ingest::IngestOutcome::kQuarantined && o.keep_quarantined) {
      if (auto st = KeepQuarantined(o.incoming_dir, file.string()); !st.ok()) {
        spdlog::error("dicom: {}; the file is deleted instead", std::string(st.message()));
        fs::remove(file, ec);
      }
    } else {
      fs::remove(file, ec);
    }
  }
  const ingest::IngestSummary s = (*ingestor)->Summary();
  spdlog::info("dicom: ingested {} received file(s), {} already present, {} quarantined", s.ingested, s.already_done,
               s.quarantined);
}

void StoreScp::Impl::IngestLoop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu);
      // A periodic look as well: files left after an ingest error are retried.
      cv.wait_for(lock, std::chrono::seconds(30), [&] { return arrived || ingest_stop; });
      if (!arrived && ingest_stop) return;
      // Files of one study arrive in a burst: gather it into one batch.
      if (!ingest_stop) cv.wait_for(lock, std::chrono::milliseconds(250), [&] { return ingest_stop; });
      arrived = false;
    }
    IngestPending();
    PurgeExpired();
  }
}

void StoreScp::Impl::PurgeExpired() {
  auto purged = PurgeKeptQuarantine(o.incoming_dir, std::max(o.quarantine_retention_days, 1e-9));
  if (!purged.ok()) {
    spdlog::error("dicom: kept quarantined files: {}", std::string(purged.status().message()));
  } else if (*purged > 0) {
    spdlog::info("dicom: purged {} quarantined file(s) kept longer than {} day(s)", *purged,
                 o.quarantine_retention_days);
  }
}

absl::Status ValidateStoreScpOptions(const StoreScpOptions& o) {
  in_addr addr{};
  if (inet_pton(AF_INET, o.address.c_str(), &addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("[scp] address \"", o.address, "\" is not an IPv4 address"));
  }
  if (o.port < 0 || o.port > 65535) return absl::InvalidArgumentError("[scp] port must be 0..65535");
  if (o.ae_title.empty() || o.ae_title.size() > 16) {
    return absl::InvalidArgumentError("[scp] ae_title must have 1 to 16 characters");
  }
  if (o.allowed_calling_aes.empty()) {
    return absl::InvalidArgumentError(
        "[scp] allowed_calling_aes is empty: no sender could store anything; list the AE titles of the PACS "
        "or modalities that send to this site");
  }
  for (const auto& ae : o.allowed_calling_aes) {
    if (ae.empty() || ae.size() > 16) {
      return absl::InvalidArgumentError(absl::StrCat("[scp] allowed_calling_aes: \"", ae, "\" is not an AE title "
                                                     "(1 to 16 characters)"));
    }
  }
  const bool loopback = (ntohl(addr.s_addr) >> 24) == 127;
  if (!loopback && o.allowed_hosts.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "[scp] address \"", o.address, "\" reaches beyond this host: list the IPv4 addresses of the PACS and "
        "modalities that send here in [scp] allowed_hosts (required unless the address is loopback)"));
  }
  in_addr host{};
  for (const auto& h : o.allowed_hosts) {
    if (inet_pton(AF_INET, h.c_str(), &host) != 1) {
      return absl::InvalidArgumentError(absl::StrCat("[scp] allowed_hosts: \"", h, "\" is not an IPv4 address"));
    }
  }
  if (o.max_associations < 1 || o.max_associations > 256) {
    return absl::InvalidArgumentError("[scp] max_associations must be 1..256");
  }
  if (o.max_pending_connections < 1) return absl::InvalidArgumentError("[scp] max_pending_connections must be >= 1");
  if (o.min_free_bytes < 0) return absl::InvalidArgumentError("[scp] min_free_mb must be >= 0");
  if (o.incoming_dir.empty()) return absl::InvalidArgumentError("[scp] no incoming directory");
  return absl::OkStatus();
}

StoreScp::StoreScp(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

StoreScp::~StoreScp() {
  Stop();
  if (impl_->leaked) (void)impl_.release();
}

absl::StatusOr<std::unique_ptr<StoreScp>> StoreScp::Start(const StoreScpOptions& options,
                                                          const ingest::IngestOptions& ingest) {
  RETURN_IF_ERROR(ValidateStoreScpOptions(options));
  auto impl = std::make_unique<Impl>();
  impl->o = options;
  impl->ingest = ingest;
  std::error_code ec;
  fs::create_directories(options.incoming_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create the incoming directory ", options.incoming_dir, ": ", ec.message()));
  }
  fs::permissions(options.incoming_dir, fs::perms::owner_all, fs::perm_options::replace, ec);  // identifiable files
  // A file cut off by a stop was never acknowledged: the sender sends it again.
  for (const auto& e : fs::directory_iterator(options.incoming_dir, ec)) {
    if (e.path().extension() == kPartSuffix) fs::remove(e.path(), ec);
  }
  impl->PurgeExpired();  // the retention holds across restarts too
  ingest::RegisterDecoders();  // also silences DCMTK's logging (it can quote attribute values)
  dcmDisableGethostbyaddr.set(OFTrue);

  // The listening socket, on the configured address only.
  impl->listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (impl->listen_fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  const int one = 1;
  ::setsockopt(impl->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  // Accepted sockets inherit it: room for a whole association request.
  const int receive_buffer = 4 * static_cast<int>(kMaxAssociationRequest);
  ::setsockopt(impl->listen_fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(options.port));
  inet_pton(AF_INET, options.address.c_str(), &addr.sin_addr);
  if (::bind(impl->listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(impl->listen_fd, 64) != 0) {
    const std::string why = std::strerror(errno);
    ::close(impl->listen_fd);
    return absl::UnavailableError(
        absl::StrCat("cannot listen for DICOM on ", options.address, ":", options.port, ": ", why));
  }
  socklen_t len = sizeof addr;
  ::getsockname(impl->listen_fd, reinterpret_cast<sockaddr*>(&addr), &len);
  impl->port = ntohs(addr.sin_port);

  // DUL's network object, without a listening socket of its own: while the
  // external-socket global is set, initialization skips creating one.
  dcmExternalSocketHandle.set(impl->listen_fd);
  OFCondition cond = ASC_initializeNetwork(NET_ACCEPTOR, impl->port, options.acse_timeout_seconds, &impl->network);
  dcmExternalSocketHandle.set(DCMNET_INVALID_SOCKET);
  if (cond.bad()) {
    ::close(impl->listen_fd);
    return absl::InternalError(absl::StrCat("DICOM network initialization failed: ", cond.text()));
  }

  auto pool = std::make_unique<ScpPool>(impl.get());
  DcmSCPConfig& cfg = pool->getConfig();
  cfg.setAETitle(options.ae_title.c_str());
  cfg.setACSETimeout(static_cast<Uint32>(options.acse_timeout_seconds));
  cfg.setConnectionTimeout(static_cast<Uint32>(options.acse_timeout_seconds));
  cfg.setDIMSEBlockingMode(DIMSE_NONBLOCKING);  // an idle association ends after the DIMSE timeout
  cfg.setDIMSETimeout(static_cast<Uint32>(options.dimse_timeout_seconds));
  cfg.setHostLookupEnabled(OFFalse);
  OFList<OFString> verification_ts;
  verification_ts.push_back(UID_LittleEndianExplicitTransferSyntax);
  verification_ts.push_back(UID_LittleEndianImplicitTransferSyntax);
  cond = cfg.addPresentationContext(UID_VerificationSOPClass, verification_ts);
  for (const char* sop_class : kImageStorageClasses) {
    if (cond.good()) cond = cfg.addPresentationContext(sop_class, ImageTransferSyntaxes());
  }
  if (cond.bad()) {
    ASC_dropNetwork(&impl->network);
    ::close(impl->listen_fd);
    return absl::InternalError(absl::StrCat("DICOM presentation contexts: ", cond.text()));
  }
  pool->setMaxThreads(static_cast<Uint16>(options.max_associations));
  pool->FreezeConfig();
  impl->pool = std::move(pool);

  Impl* raw = impl.get();
  impl->ingester = std::thread([raw] { raw->IngestLoop(); });
  impl->acceptor = std::thread([raw] { raw->AcceptLoop(); });
  spdlog::info("dicom: storage SCP {} listening on {}:{} for CR/DX from {}", options.ae_title, options.address,
               impl->port, absl::StrJoin(options.allowed_calling_aes, ", "));
  return std::unique_ptr<StoreScp>(new StoreScp(std::move(impl)));
}

int StoreScp::port() const { return impl_->port; }

StoreScpCounters StoreScp::Counters() const {
  const Impl& i = *impl_;
  return {i.associations.load(), i.refused.load(),     i.received.load(),    i.store_failures.load(),
          i.ingested.load(),     i.already_done.load(), i.quarantined.load(), i.ingest_errors.load()};
}

int64_t StoreScp::Pending() const {
  int64_t n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(impl_->o.incoming_dir, ec)) n += e.path().extension() == kDoneSuffix;
  return n;
}

void StoreScp::Stop() {
  Impl& i = *impl_;
  if (i.stopped) return;
  i.stopped = true;
  i.stopping = true;
  if (i.acceptor.joinable()) i.acceptor.join();
  ::close(i.listen_fd);
  // Open associations finish (an idle one ends at the DIMSE timeout).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(i.o.dimse_timeout_seconds + 5);
  while (i.pool->numThreads(OFFalse) > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const bool workers_done = i.pool->numThreads(OFFalse) == 0;
  {
    std::lock_guard<std::mutex> lock(i.mu);
    i.ingest_stop = true;
    i.arrived = true;  // one last pass over what was received
  }
  i.cv.notify_all();
  if (i.ingester.joinable()) i.ingester.join();
  if (workers_done) {
    ASC_dropNetwork(&i.network);
  } else {
    // A worker still runs (a sender that neither sends nor times out): its
    // thread refers to the pool and network, which are therefore kept.
    spdlog::warn("dicom: an association was still open at stop");
    (void)i.pool.release();
    i.leaked = true;
  }
  spdlog::info("dicom: storage SCP stopped");
}

}  // namespace fedtune::scp
