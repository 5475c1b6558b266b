// The DICOM storage SCP as a PACS meets it: `fedtune-site receive` on
// 127.0.0.1 with a free port, DCMTK's own storescu / echoscu as the clients.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "site-agent/ingest/synth.h"
#include "tests/testing/process.h"
#include "tests/testing/run_command.h"

namespace {

namespace fs = std::filesystem;
using fedtune::testing::ChildProcess;
using fedtune::testing::RunCommand;

bool HaveDcmtkTools() {
  std::string out;
  return RunCommand("command -v storescu && command -v echoscu", &out) == 0;
}

// Appends a labels file (keyed by SOPInstanceUID, as a RIS export for
// received images would be) to `out`, with its header only when asked.
void AppendLabels(const fedtune::ingest::SynthResult& site, std::ofstream& out, bool header) {
  std::ifstream in(site.labels_csv);
  std::string line;
  for (bool first = true; std::getline(in, line); first = false) {
    if (!first || header) out << line << "\n";
  }
}

// Is `port` listening on 127.0.0.1 only (not on every interface)?
std::string ListeningAddress(int port) {
  std::ifstream tcp("/proc/net/tcp");
  std::string line;
  char want[8];
  std::snprintf(want, sizeof want, ":%04X", port);
  while (std::getline(tcp, line)) {
    std::istringstream row(line);
    std::string slot, local, remote, state;
    row >> slot >> local >> remote >> state;
    if (state == "0A" && local.size() > 5 && local.substr(local.size() - 5) == want) return local.substr(0, 8);
  }
  return "";
}

nlohmann::json LastJsonLine(const std::string& log) {
  std::ifstream in(log);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty() && line.front() == '{') last = line;
  }
  return last.empty() ? nlohmann::json() : nlohmann::json::parse(last);
}

absl::StatusOr<fedtune::ingest::SynthResult> OneImage(const std::string& site, const std::string& dir) {
  fedtune::ingest::SynthOptions o;
  o.site = site;
  o.patients = 1;
  o.max_studies_per_patient = 1;
  o.image_size = 256;
  o.labels_by_sop_instance_uid = true;
  return fedtune::ingest::WriteSyntheticSite(o, dir);
}

int WaitForPort(const std::string& port_file) {
  for (int i = 0; i < 300; ++i) {
    std::ifstream in(port_file);
    int port = 0;
    if (in >> port && port > 0) return port;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return 0;
}

TEST(DicomScp, StorescuSendsAndEveryFileIsIngested) {
  if (!HaveDcmtkTools()) GTEST_SKIP() << "dcmtk's storescu/echoscu are not installed (deploy/install-deps.sh installs dcmtk)";
  const std::string dir = ::testing::TempDir() + "/dicom_scp";
  fs::remove_all(dir);
  fs::create_directories(dir);

  // Three scanner styles (uncompressed DX, RLE MONOCHROME1 CR-like, JPEG-LS),
  // and one file a stopped receiver left behind in the incoming folder.
  std::vector<std::string> sent;
  std::vector<std::pair<std::string, std::string>> batches;  // storescu option, files
  std::ofstream labels(dir + "/labels.csv");
  int index = 0;
  for (const char* compression : {"none", "rle", "jpegls"}) {
    fedtune::ingest::SynthOptions o;
    o.site = std::string("SCP") + std::to_string(index);
    o.patients = 3;
    o.image_size = 256;
    o.seed = 7 + index;
    o.style.compression = compression;
    o.style.monochrome1 = std::string(compression) == "rle";
    o.labels_by_sop_instance_uid = true;
    auto site = fedtune::ingest::WriteSyntheticSite(o, dir + "/pacs" + std::to_string(index));
    ASSERT_TRUE(site.ok()) << site.status();
    AppendLabels(*site, labels, index == 0);
    sent.insert(sent.end(), site->files.begin(), site->files.end());
    // storescu proposes uncompressed syntaxes unless told: -xr proposes RLE,
    // -xt JPEG-LS lossless (as a PACS is configured per destination).
    std::string files;
    for (const auto& f : site->files) files += " " + f;
    batches.emplace_back(index == 0 ? "" : index == 1 ? " -xr" : " -xt", files);
    ++index;
  }
  auto leftover = OneImage("LEFTOVER", dir + "/leftover");
  ASSERT_TRUE(leftover.ok());
  AppendLabels(*leftover, labels, false);
  labels.close();
  fs::create_directories(dir + "/ws/incoming");
  fs::copy_file(leftover->files.front(), dir + "/ws/incoming/rx-0000000000000000.dcm");
  // A CT image: a storage class this receiver must refuse.
  {
    DcmFileFormat ct;
    ASSERT_TRUE(ct.loadFile(sent.front().c_str()).good());
    ct.getDataset()->putAndInsertString(DCM_SOPClassUID, UID_CTImageStorage);
    ct.getDataset()->putAndInsertString(DCM_Modality, "CT");
    ASSERT_TRUE(ct.saveFile((dir + "/ct.dcm").c_str(), EXS_Unknown, EET_ExplicitLength, EGL_recalcGL, EPD_noChange, 0,
                            0, EWM_createNewMeta)
                    .good());
  }

  std::ofstream(dir + "/site.toml")
      << "[site]\nid = \"hospital-r\"\nworkspace = \"ws\"\n[ingest]\nimage_size = 64\n"
      << "[labels]\nkey = \"sop_instance_uid\"\nkey_column = \"sop_instance_uid\"\n"
      << "findings = [\"Cardiomegaly\", \"Pleural effusion\", \"Nodule/Mass\", "
         "\"Pneumothorax\"]\n"
      << "[scp]\naddress = \"127.0.0.1\"\nport = 0\nae_title = \"FEDTUNE_R\"\nallowed_calling_aes = [\"PACS1\"]\n"
      << "labels = \"labels.csv\"\n";
  const std::string log = dir + "/receive.log";
  ChildProcess receiver({FEDTUNE_SITE_BIN, "receive", "--config", dir + "/site.toml", "--port-file", dir + "/port",
                         "--json"},
                        log);
  const int port = WaitForPort(dir + "/port");
  ASSERT_GT(port, 0) << "receiver did not start; see " << log;
  EXPECT_EQ(ListeningAddress(port), "0100007F") << "the SCP must listen on 127.0.0.1 only";
  const std::string target = " -aec FEDTUNE_R 127.0.0.1 " + std::to_string(port);

  std::string out;
  {
    // A client that connects and says nothing (a TCP health check) must not
    // hold up others: echoscu gives up after 10 s, the SCP's own ACSE timeout is 30 s.
    const int idle = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(idle, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(RunCommand("echoscu -ta 10 -aet PACS1" + target, &out), 0) << out;
    ::close(idle);
  }
  for (const auto& [option, files] : batches) {
    ASSERT_EQ(RunCommand("storescu -aet PACS1" + option + target + files, &out), 0) << option << ": " << out;
    EXPECT_EQ(out.find("E:"), std::string::npos) << option << ": " << out;
  }
  // Refused: an unknown sender, a wrong called AE, a CT image.
  EXPECT_NE(RunCommand("storescu -aet INTRUDER" + target + " " + sent.front(), &out), 0);
  EXPECT_NE(out.find("Calling AE Title Not Recognized"), std::string::npos) << out;
  EXPECT_NE(RunCommand("storescu -aet PACS1 -aec SOMEONE_ELSE 127.0.0.1 " + std::to_string(port) + " " + sent.front(),
                       &out),
            0);
  EXPECT_NE(out.find("Called AE Title Not Recognized"), std::string::npos) << out;
  RunCommand("storescu -aet PACS1" + target + " " + dir + "/ct.dcm", &out);
  EXPECT_NE(out.find("No presentation context for: (CT)"), std::string::npos) << out;

  EXPECT_EQ(receiver.Stop(), 0) << "see " << log;
  const nlohmann::json counts = LastJsonLine(log);
  ASSERT_FALSE(counts.is_null()) << "no summary in " << log;
  EXPECT_EQ(counts["received"].get<int>(), static_cast<int>(sent.size())) << counts.dump();
  EXPECT_EQ(counts["ingested"].get<int>(), static_cast<int>(sent.size()) + 1) << counts.dump();
  EXPECT_EQ(counts["quarantined"].get<int>(), 0) << counts.dump();
  EXPECT_EQ(counts["refused"].get<int>(), 2) << counts.dump();
  EXPECT_EQ(counts["store_failures"].get<int>(), 0) << counts.dump();
  EXPECT_EQ(counts["pending"].get<int>(), 0) << counts.dump();

  // The workspace holds every image, labelled; no received file is left.
  ASSERT_EQ(RunCommand(std::string(FEDTUNE_SITE_BIN) + " stats --json --config " + dir + "/site.toml 2>/dev/null", &out),
            0)
      << out;
  const auto stats = nlohmann::json::parse(out);
  int images = 0, positives = 0;
  for (const auto& [name, split] : stats["splits"].items()) {
    images += split["images"].get<int>();
    for (int p : split["positives"]) positives += p;
  }
  EXPECT_EQ(images, static_cast<int>(sent.size()) + 1);
  EXPECT_GT(positives, 0) << "labels from [scp] labels were not joined";
  EXPECT_EQ(stats["quarantined"].get<int>(), 0);
  int left_files = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir + "/ws/incoming")) left_files += e.is_regular_file();
  EXPECT_EQ(left_files, 0);

  // Nothing identifying in the workspace (index, WAL, cache, de-identified
  // copies) or in what the receiver logged.
  std::vector<std::string> scanned = {log};
  for (const auto& e : fs::recursive_directory_iterator(dir + "/ws")) {
    if (e.is_regular_file() && e.path().filename() != "site.key") scanned.push_back(e.path().string());
  }
  for (const auto& path : scanned) {
    std::ifstream in(path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (const char* site : {"SCP0", "SCP1", "SCP2", "LEFTOVER"}) {
      for (const std::string& phi : fedtune::ingest::PlantedPhi(site)) {
        EXPECT_EQ(bytes.find(phi), std::string::npos) << path << " holds " << phi;
      }
    }
  }
  EXPECT_GT(scanned.size(), sent.size());  // the de-identified copies were among them
}

// A file that cannot be ingested is still answered "stored" (it was), then
// quarantined with its reason; the raw file is kept aside for the operator.
TEST(DicomScp, UnlabelledArrivalIsQuarantinedAndKeptAside) {
  if (!HaveDcmtkTools()) GTEST_SKIP() << "dcmtk's storescu is not installed (deploy/install-deps.sh installs dcmtk)";
  const std::string dir = ::testing::TempDir() + "/dicom_scp_quarantine";
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto site = OneImage("QSCP", dir + "/pacs");
  ASSERT_TRUE(site.ok());
  std::ofstream(dir + "/labels.csv") << "image_id,rad_id,Cardiomegaly\n2.25.1,R1,1\n";
  std::ofstream(dir + "/site.toml") << "[site]\nid = \"hospital-q\"\nworkspace = \"ws\"\n[ingest]\nimage_size = 64\n"
                                    << "[labels]\nkey = \"sop_instance_uid\"\nfindings = [\"Cardiomegaly\"]\n"
                                    << "[scp]\nport = 0\nallowed_calling_aes = [\"PACS1\"]\nlabels = \"labels.csv\"\n"
                                    << "keep_quarantined = true\n";
  ChildProcess receiver({FEDTUNE_SITE_BIN, "receive", "--config", dir + "/site.toml", "--port-file", dir + "/port",
                         "--json"},
                        dir + "/receive.log");
  const int port = WaitForPort(dir + "/port");
  ASSERT_GT(port, 0);
  std::string out;
  ASSERT_EQ(RunCommand("storescu -aet PACS1 -aec FEDTUNE 127.0.0.1 " + std::to_string(port) + " " +
                           site->files.front(),
                       &out),
            0)
      << out;
  EXPECT_EQ(receiver.Stop(), 0);
  const nlohmann::json counts = LastJsonLine(dir + "/receive.log");
  EXPECT_EQ(counts["received"].get<int>(), 1) << counts.dump();
  EXPECT_EQ(counts["quarantined"].get<int>(), 1) << counts.dump();
  ASSERT_EQ(RunCommand(std::string(FEDTUNE_SITE_BIN) + " stats --json --config " + dir + "/site.toml 2>/dev/null", &out),
            0);
  EXPECT_EQ(nlohmann::json::parse(out)["quarantine_reasons"]["unlabelled"].get<int>(), 1) << out;
  int kept = 0;
  for (const auto& e : fs::directory_iterator(dir + "/ws/incoming/quarantine")) kept += e.is_regular_file();
  EXPECT_EQ(kept, 1);
  EXPECT_EQ(fs::status(dir + "/ws/incoming/quarantine").permissions() & fs::perms::all, fs::perms::owner_all);
  // The operator sees why, and deletes it.
  ASSERT_EQ(RunCommand(std::string(FEDTUNE_SITE_BIN) + " quarantine list --json --config " + dir + "/site.toml", &out),
            0)
      << out;
  const auto listed = nlohmann::json::parse(out, nullptr, false);
  ASSERT_TRUE(listed.is_array() && listed.size() == 1) << out;
  EXPECT_EQ(listed[0]["reason"], "unlabelled");
  ASSERT_EQ(RunCommand(std::string(FEDTUNE_SITE_BIN) + " quarantine purge --config " + dir + "/site.toml", &out), 0);
  EXPECT_NE(out.find("deleted 1 kept quarantined file(s)"), std::string::npos) << out;
  EXPECT_TRUE(fs::is_empty(dir + "/ws/incoming/quarantine"));
}

TEST(DicomScp, ConfigurationMistakesAreClearErrors) {
  const std::string dir = ::testing::TempDir() + "/dicom_scp_config";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir + "/site.toml") << "[site]\nid = \"h\"\nworkspace = \"ws\"\n[scp]\nport = 0\n";
  std::string out;
  EXPECT_EQ(RunCommand(std::string(FEDTUNE_SITE_BIN) + " receive --config " + dir + "/site.toml", &out), 1);
  EXPECT_NE(out.find("allowed_calling_aes is empty"), std::string::npos) << out;
  std::ofstream(dir + "/site.toml") << "[site]\nid = \"h\"\nworkspace = \"ws\"\n[scp]\naddress = \"localhost\"\n"
                                    << "allowed_calling_aes = [\"PACS\"]\n";
  EXPECT_EQ(RunCommand(std::string(FEDTUNE_SITE_BIN) + " receive --config " + dir + "/site.toml", &out), 1);
  EXPECT_NE(out.find("is not an IPv4 address"), std::string::npos) << out;
  std::ofstream(dir + "/site.toml") << "[site]\nid = \"h\"\nworkspace = \"ws\"\n[labels]\nfindings = [\"A\"]\n"
                                    << "[scp]\nallowed_calling_aes = [\"PACS\"]\nlabels = \"l.csv\"\n";
  EXPECT_EQ(RunCommand(std::string(FEDTUNE_SITE_BIN) + " receive --config " + dir + "/site.toml", &out), 2);
  EXPECT_NE(out.find("sop_instance_uid"), std::string::npos) << out;
  // Listening beyond loopback without naming who may connect.
  std::ofstream(dir + "/site.toml") << "[site]\nid = \"h\"\nworkspace = \"ws\"\n[scp]\naddress = \"0.0.0.0\"\n"
                                    << "allowed_calling_aes = [\"PACS\"]\n";
  EXPECT_EQ(RunCommand(std::string(FEDTUNE_SITE_BIN) + " receive --config " + dir + "/site.toml", &out), 1);
  EXPECT_NE(out.find("reaches beyond this host: list the IPv4 addresses"), std::string::npos) << out;
}

int ConnectTo(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Whether the receiver closed `fd` within `seconds`: end of stream, or a
// reset when it closed with bytes of ours unread.
bool ClosedByPeer(int fd, int seconds) {
  timeval tv{seconds, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char c;
  const ssize_t n = ::recv(fd, &c, 1, 0);
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

struct Receiver {
  std::string dir;
  std::unique_ptr<ChildProcess> process;
  int port = 0;
  std::string target() const { return " -aec FEDTUNE 127.0.0.1 " + std::to_string(port) + " "; }
};

Receiver StartReceiver(const std::string& name, const std::string& extra_ingest, const std::string& extra_scp) {
  Receiver r;
  r.dir = ::testing::TempDir() + "/" + name;
  fs::remove_all(r.dir);
  fs::create_directories(r.dir);
  std::ofstream(r.dir + "/site.toml") << "[site]\nid = \"h\"\nworkspace = \"ws\"\n[ingest]\nimage_size = 64\n"
                                      << extra_ingest << "[scp]\nport = 0\nallowed_calling_aes = [\"PACS1\"]\n"
                                      << extra_scp;
  r.process = std::make_unique<ChildProcess>(
      std::vector<std::string>{FEDTUNE_SITE_BIN, "receive", "--config", r.dir + "/site.toml", "--port-file",
                               r.dir + "/port", "--json"},
      r.dir + "/receive.log");
  r.port = WaitForPort(r.dir + "/port");
  return r;
}

// One peer that trickles its association request byte by byte, or many that
// connect and stay silent, or one that announces a huge request, hold no
// one up: a sender behind them is answered at once.
TEST(DicomScp, OnePeerCannotStallTheReceiver) {
  if (!HaveDcmtkTools()) GTEST_SKIP() << "dcmtk's echoscu is not installed (deploy/install-deps.sh installs dcmtk)";
  Receiver r = StartReceiver("dicom_scp_stall", "", "max_pending_connections = 4\n");
  ASSERT_GT(r.port, 0) << "see " << r.dir << "/receive.log";
  std::string out;

  // A trickler: an A-ASSOCIATE-RQ header announcing 200 bytes, then one
  // byte every 100 ms. (Before, the listener read the request blocking and
  // every other sender waited for it.)
  std::atomic<bool> stop{false};
  const int trickler = ConnectTo(r.port);
  ASSERT_GE(trickler, 0);
  const unsigned char header[6] = {0x01, 0x00, 0x00, 0x00, 0x00, 200};
  ASSERT_EQ(::send(trickler, header, sizeof header, 0), 6);
  std::thread trickle([&] {
    const char one = 0;
    for (int i = 0; i < 60 && !stop; ++i) {
      ::send(trickler, &one, 1, MSG_NOSIGNAL);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(RunCommand("echoscu -ta 5 -aet PACS1" + r.target(), &out), 0) << "a trickling peer stalled: " << out;

  // A request announced as 1 MiB is refused at once.
  const int huge = ConnectTo(r.port);
  const unsigned char big[6] = {0x01, 0x00, 0x00, 0x10, 0x00, 0x00};
  ASSERT_EQ(::send(huge, big, sizeof big, 0), 6);
  EXPECT_TRUE(ClosedByPeer(huge, 5)) << "an oversized association request was not refused";
  ::close(huge);

  // Six silent connections with room for four pending: the oldest go first
  // (the trickler among them), and a real sender still gets through.
  std::vector<int> silent;
  for (int i = 0; i < 6; ++i) {
    silent.push_back(ConnectTo(r.port));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(ClosedByPeer(trickler, 5)) << "the oldest waiting connection was not closed";
  EXPECT_TRUE(ClosedByPeer(silent[0], 5)) << "the oldest waiting connection was not closed";
  EXPECT_EQ(RunCommand("echoscu -ta 5 -aet PACS1" + r.target(), &out), 0) << out;
  stop = true;
  trickle.join();
  ::close(trickler);
  for (int fd : silent) ::close(fd);
  EXPECT_EQ(r.process->Stop(), 0);
  const nlohmann::json counts = LastJsonLine(r.dir + "/receive.log");
  EXPECT_GE(counts["refused"].get<int>(), 3) << counts.dump();
}

// An object above [ingest] max_file_mb is cut off while it arrives; with too
// little free disk every store is answered "out of resources" (0xA700) and
// nothing is written.
TEST(DicomScp, OversizedObjectsAndALowDiskAreRefused) {
  if (!HaveDcmtkTools()) GTEST_SKIP() << "dcmtk's storescu is not installed (deploy/install-deps.sh installs dcmtk)";
  const std::string pacs = ::testing::TempDir() + "/dicom_scp_limits_pacs";
  fs::remove_all(pacs);
  fedtune::ingest::SynthOptions o;
  o.site = "BIG";
  o.patients = 1;
  o.max_studies_per_patient = 1;
  o.image_size = 1024;  // 2 MiB of 16-bit pixels
  auto big = fedtune::ingest::WriteSyntheticSite(o, pacs);
  ASSERT_TRUE(big.ok()) << big.status();
  ASSERT_GT(fs::file_size(big->files.front()), 1u << 20);
  std::string out;
  {
    Receiver r = StartReceiver("dicom_scp_limits", "max_file_mb = 1\n", "");
    ASSERT_GT(r.port, 0);
    EXPECT_NE(RunCommand("storescu -aet PACS1" + r.target() + big->files.front(), &out), 0) << out;
    EXPECT_EQ(r.process->Stop(), 0);
    const nlohmann::json counts = LastJsonLine(r.dir + "/receive.log");
    EXPECT_EQ(counts["received"].get<int>(), 0) << counts.dump();
    EXPECT_EQ(counts["store_failures"].get<int>(), 1) << counts.dump();
    int files = 0;
    for (const auto& e : fs::recursive_directory_iterator(r.dir + "/ws/incoming")) files += e.is_regular_file();
    EXPECT_EQ(files, 0);
  }
  {
    // More free space than any disk has.
    Receiver r = StartReceiver("dicom_scp_disk", "", "min_free_mb = 1099511627776\n");
    ASSERT_GT(r.port, 0);
    EXPECT_NE(RunCommand("storescu -v -aet PACS1" + r.target() + big->files.front(), &out), 0);
    EXPECT_NE(out.find("Received Store Response (Refused: OutOfResources)"), std::string::npos) << out;
    EXPECT_EQ(r.process->Stop(), 0);
    const nlohmann::json counts = LastJsonLine(r.dir + "/receive.log");
    EXPECT_EQ(counts["received"].get<int>(), 0) << counts.dump();
    EXPECT_EQ(counts["store_failures"].get<int>(), 1) << counts.dump();
    std::ifstream log(r.dir + "/receive.log");
    const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
    EXPECT_NE(text.find("min_free_mb"), std::string::npos) << text;
  }
}

}  // namespace
