#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdatset.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcitem.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcvrobow.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "site-agent/ingest/deid_profile.h"
#include "site-agent/ingest/deidentifier.h"
#include "tests/testing/run_command.h"

namespace fedtune::ingest {
namespace {

const std::vector<uint8_t> kKey(32, 0x5A);
const std::vector<uint8_t> kOtherKey(32, 0xA5);

TEST(DeidProfile, ActionsFollowTableE11) {
  const DeidOptions none;
  EXPECT_EQ(ResolveDeidAction(0x0010, 0x0010, none), DeidAction::kEmpty);       // Patient's Name: Z
  EXPECT_EQ(ResolveDeidAction(0x0010, 0x0030, none), DeidAction::kEmpty);       // Birth Date: Z
  EXPECT_EQ(ResolveDeidAction(0x0010, 0x1040, none), DeidAction::kRemove);      // Patient's Address: X
  EXPECT_EQ(ResolveDeidAction(0x0008, 0x0080, none), DeidAction::kEmpty);       // Institution Name: X/Z/D
  EXPECT_EQ(ResolveDeidAction(0x0020, 0x000D, none), DeidAction::kReplaceUid);  // Study Instance UID: U
  EXPECT_EQ(ResolveDeidAction(0x0008, 0x0020, none), DeidAction::kEmpty);       // Study Date: Z
  EXPECT_EQ(ResolveDeidAction(0x0009, 0x1001, none), DeidAction::kRemove);      // private
  EXPECT_EQ(ResolveDeidAction(0x6000, 0x3000, none), DeidAction::kRemove);      // overlay data
  EXPECT_EQ(ResolveDeidAction(0x6002, 0x0010, none), DeidAction::kRemove);      // any overlay attribute
  EXPECT_EQ(ResolveDeidAction(0x5000, 0x0022, none), DeidAction::kRemove);      // curves
  EXPECT_EQ(ResolveDeidAction(0x7FE0, 0x0010, none), DeidAction::kKeep);        // pixel data
  EXPECT_EQ(ResolveDeidAction(0x0028, 0x0010, none), DeidAction::kKeep);        // rows
  EXPECT_GT(DeidTableSize(), 600u);

  DeidOptions all;
  all.retain_patient_characteristics = all.retain_device_identity = all.retain_institution_identity = true;
  all.modified_dates = all.clean_descriptors = true;
  EXPECT_EQ(ResolveDeidAction(0x0010, 0x0040, all), DeidAction::kKeep);       // Patient's Sex
  EXPECT_EQ(ResolveDeidAction(0x0010, 0x0040, none), DeidAction::kEmpty);
  EXPECT_EQ(ResolveDeidAction(0x0008, 0x0080, all), DeidAction::kKeep);       // Institution Name
  EXPECT_EQ(ResolveDeidAction(0x0018, 0x1000, all), DeidAction::kKeep);       // Device Serial Number
  EXPECT_EQ(ResolveDeidAction(0x0008, 0x0020, all), DeidAction::kShiftDate);  // Study Date
  EXPECT_EQ(ResolveDeidAction(0x0008, 0x1030, all), DeidAction::kClean);      // Study Description
  // "C" under a retain option cleans (empties), never keeps.
  EXPECT_EQ(ResolveDeidAction(0x0008, 0x0055, all), DeidAction::kClean);  // Station AE Title: device C
  EXPECT_EQ(ResolveDeidAction(0x0010, 0x2110, all), DeidAction::kClean);  // Allergies: patient C
  EXPECT_EQ(ResolveDeidAction(0x0010, 0x1010, all), DeidAction::kKeep);   // Patient's Age: patient K
  EXPECT_EQ(DeidMethodCodes(all).size(), 6u);
  EXPECT_STREQ(DeidMethodCodes(none)[0].value, "113100");
}

TEST(Deid, PseudonymsAreStableKeyedAndValidUids) {
  const std::string uid = "1.2.840.99999.1.1";
  const std::string a = PseudonymousUid(kKey, uid);
  EXPECT_EQ(a, PseudonymousUid(kKey, uid));
  EXPECT_NE(a, PseudonymousUid(kOtherKey, uid));
  EXPECT_EQ(a.rfind("2.25.", 0), 0u);
  EXPECT_LE(a.size(), 64u);
  EXPECT_NE(a[5], '0');  // no leading zero in a UID component
  for (char c : a) EXPECT_TRUE(c == '.' || (c >= '0' && c <= '9'));
  const Phi<std::string> id("MRN-00042");
  EXPECT_EQ(PatientPseudonym(kKey, id), PatientPseudonym(kKey, id));
  EXPECT_NE(PatientPseudonym(kKey, id), PatientPseudonym(kOtherKey, id));
  const int shift = DateShiftDays(kKey, id);
  EXPECT_GE(shift, -3650);
  EXPECT_LE(shift, -1);
}

TEST(Deid, ShiftDicomTimeAndDateTime) {
  EXPECT_EQ(ShiftDicomTime("101245", 3600), "111245");
  EXPECT_EQ(ShiftDicomTime("233000", 3600), "003000");  // around the clock
  EXPECT_EQ(ShiftDicomTime("1012", 61), "1013");          // precision kept: minutes
  EXPECT_EQ(ShiftDicomTime("10", 7200), "12");
  EXPECT_EQ(ShiftDicomTime("101245.123456", 15), "101300.123456");
  EXPECT_EQ(ShiftDicomTime("10:12:45", 15), "101300");  // the old form, written as the current one
  EXPECT_EQ(ShiftDicomTime("2599", 1), "");
  EXPECT_EQ(ShiftDicomTime("10x245", 1), "");
  EXPECT_EQ(ShiftDicomTime("1012.5", 1), "");
  // A DT moves its date by the days and its time as the TM of the same
  // instant does, so DA + TM and DT stay equal; a UTC offset is kept.
  EXPECT_EQ(ShiftDicomDateTime("20240315233000", -15, 3600), ShiftDicomDate("20240315", -14) + "003000");
  int carry = -1;
  EXPECT_EQ(ShiftDicomTime("233000", 3600, &carry), "003000");
  EXPECT_EQ(carry, 1);
  EXPECT_EQ(ShiftDicomTime("101245", 3600, &carry), "111245");
  EXPECT_EQ(carry, 0);
  EXPECT_EQ(ShiftDicomDateTime("20240315101245.5+0100", -1, 15), "20240314101300.5+0100");
  EXPECT_EQ(ShiftDicomDateTime("20240315", -1, 15), "20240314");
  EXPECT_EQ(ShiftDicomDateTime("2024", -1, 15), "");
  EXPECT_EQ(ShiftDicomDateTime("20240315ab", -1, 15), "");
  const Phi<std::string> id("MRN-00042");
  const int seconds = TimeShiftSeconds(kKey, id);
  EXPECT_GE(seconds, 0);
  EXPECT_LT(seconds, 86400);
  EXPECT_EQ(seconds, TimeShiftSeconds(kKey, id));
}

TEST(Deid, ShiftDicomDate) {
  EXPECT_EQ(ShiftDicomDate("20240301", -1), "20240229");  // leap year
  EXPECT_EQ(ShiftDicomDate("20230101", -365), "20220101");
  EXPECT_EQ(ShiftDicomDate("20240315120000.5", -15), "20240229120000.5");  // DT keeps its time
  EXPECT_EQ(ShiftDicomDate("garbage!", -3), "garbage!");
  EXPECT_EQ(ShiftDicomDate("2024", -3), "2024");
}

// Every value the test plants; none may survive de-identification.
const std::vector<std::string> kPlanted = {
    "DOE^JANE^MARIE", "MRN-00042",     "ST-MARYS",       "19610203",          "12 ELM STREET",
    "555-0142",       "ALT-98765",     "COUNTY-REG",     "ST MARYS GENERAL",  "1 HOSPITAL RD",
    "HOUSE^GREGORY",  "WILSON^JAMES",  "TECH^TERRY",     "ACC778899",         "STUDY4455",
    "20240315",       "CHEST PA DOE",  "Jane Doe fell",  "XRAY-ROOM-3",       "SN-123456",
    "1.2.840.99999",  "ACC-NESTED-1",  "RPID-7788",      "DOE JANE PRIVATE",  "ACME CORP",
    "OVERLAYPHI",     "overlay DOE",   "CURVE-DOE",      "101245",            "DR^NESTED",
};

void Put(DcmItem& item, const DcmTagKey& tag, const char* value) {
  ASSERT_TRUE(item.putAndInsertString(tag, value).good()) << tag.toString();
}

// A DX image with PHI planted in every place the profile must handle.
void Plant(DcmDataset& ds, const char* patient_id, const char* study_date, const char* uid_root) {
  Put(ds, DCM_SOPClassUID, UID_DigitalXRayImageStorageForPresentation);
  Put(ds, DCM_SOPInstanceUID, (std::string(uid_root) + ".3").c_str());
  Put(ds, DCM_StudyInstanceUID, (std::string(uid_root) + ".1").c_str());
  Put(ds, DCM_SeriesInstanceUID, (std::string(uid_root) + ".2").c_str());
  Put(ds, DCM_Modality, "DX");
  Put(ds, DCM_PatientName, "DOE^JANE^MARIE");
  Put(ds, DCM_PatientID, patient_id);
  Put(ds, DCM_IssuerOfPatientID, "ST-MARYS");
  Put(ds, DCM_PatientBirthDate, "19610203");
  Put(ds, DCM_PatientAddress, "12 ELM STREET");
  Put(ds, DCM_PatientTelephoneNumbers, "555-0142");
  Put(ds, DCM_InstitutionName, "ST MARYS GENERAL");
  Put(ds, DCM_InstitutionAddress, "1 HOSPITAL RD");
  Put(ds, DCM_ReferringPhysicianName, "HOUSE^GREGORY");
  Put(ds, DCM_PerformingPhysicianName, "WILSON^JAMES");
  Put(ds, DCM_OperatorsName, "TECH^TERRY");
  Put(ds, DCM_AccessionNumber, "ACC778899");
  Put(ds, DCM_StudyID, "STUDY4455");
  Put(ds, DCM_StudyDate, study_date);
  Put(ds, DCM_StudyTime, "101245");
  Put(ds, DCM_StudyDescription, "CHEST PA DOE");
  Put(ds, DCM_ImageComments, "patient Jane Doe fell");
  Put(ds, DCM_StationName, "XRAY-ROOM-3");
  Put(ds, DCM_DeviceSerialNumber, "SN-123456");
  Put(ds, DCM_Rows, "4");
  Put(ds, DCM_Columns, "4");
  DcmItem* item = nullptr;
  ASSERT_TRUE(ds.findOrCreateSequenceItem(DCM_OtherPatientIDsSequence, item, -2).good());
  Put(*item, DCM_PatientID, "ALT-98765");
  Put(*item, DCM_IssuerOfPatientID, "COUNTY-REG");
  ASSERT_TRUE(ds.findOrCreateSequenceItem(DCM_RequestAttributesSequence, item, -2).good());
  Put(*item, DCM_AccessionNumber, "ACC-NESTED-1");
  Put(*item, DCM_RequestedProcedureID, "RPID-7788");
  DcmItem* deeper = nullptr;  // a sequence inside a sequence item
  ASSERT_TRUE(item->findOrCreateSequenceItem(DCM_ReferencedStudySequence, deeper, -2).good());
  Put(*deeper, DCM_ReferencedSOPInstanceUID, (std::string(uid_root) + ".7").c_str());
  ASSERT_TRUE(deeper->findOrCreateSequenceItem(DCM_PhysiciansOfRecordIdentificationSequence, item, -2).good());
  Put(*item, DCM_PersonName, "DR^NESTED");
  // Private block, overlay, curve.
  Put(ds, DcmTagKey(0x0009, 0x0010), "ACME CORP");
  ASSERT_TRUE(ds.putAndInsertString(DcmTag(0x0009, 0x1001, DcmVR(EVR_LO)), "DOE JANE PRIVATE").good());
  const Uint8 overlay[] = "OVERLAYPHI..";
  ASSERT_TRUE(ds.putAndInsertUint8Array(DcmTag(0x6000, 0x3000, DcmVR(EVR_OB)), overlay, 12).good());
  Put(ds, DcmTagKey(0x6000, 0x4000), "overlay DOE");
  ASSERT_TRUE(ds.putAndInsertString(DcmTag(0x5000, 0x0022, DcmVR(EVR_LO)), "CURVE-DOE").good());
  const Uint16 pixels[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  ASSERT_TRUE(ds.putAndInsertUint16Array(DCM_PixelData, pixels, 16).good());
}

// Every value of every element, recursively, as text (binary values as bytes).
void Collect(DcmItem& item, std::vector<std::string>* out) {
  for (unsigned long i = 0; i < item.card(); ++i) {
    DcmElement* el = item.getElement(i);
    if (el->ident() == EVR_SQ) {
      auto* sq = static_cast<DcmSequenceOfItems*>(el);
      for (unsigned long k = 0; k < sq->card(); ++k) Collect(*sq->getItem(k), out);
      continue;
    }
    const DcmEVR vr = el->ident();
    if (vr == EVR_OB || vr == EVR_UN || vr == EVR_OW) {
      Uint8* bytes = nullptr;
      if (vr == EVR_OW) {
        Uint16* words = nullptr;
        el->getUint16Array(words);
        bytes = reinterpret_cast<Uint8*>(words);
      } else {
        el->getUint8Array(bytes);
      }
      if (bytes != nullptr) out->emplace_back(reinterpret_cast<char*>(bytes), el->getLength());
      continue;
    }
    OFString v;
    el->getOFStringArray(v);
    out->emplace_back(v.c_str());
  }
}

std::vector<std::string> Survivors(DcmDataset& ds) {
  std::vector<std::string> values, found;
  Collect(ds, &values);
  for (const std::string& planted : kPlanted) {
    for (const std::string& v : values) {
      if (v.find(planted) != std::string::npos) found.push_back(planted + " in \"" + v + "\"");
    }
  }
  return found;
}

TEST(Deid, NothingPlantedSurvivesAnywhere) {
  DcmDataset ds;
  Plant(ds, "MRN-00042", "20240315", "1.2.840.99999.1");
  ASSERT_FALSE(Survivors(ds).empty());  // the scan does find planted values
  auto summary = DeidentifyDataset(ds, kKey, DeidOptions{});
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(Survivors(ds), std::vector<std::string>{});
  EXPECT_GT(summary->removed, 5);

  OFString v;
  ds.findAndGetOFString(DCM_PatientID, v);
  EXPECT_EQ(std::string(v.c_str()), PatientPseudonym(kKey, Phi<std::string>("MRN-00042")));
  ds.findAndGetOFString(DCM_StudyInstanceUID, v);
  EXPECT_EQ(std::string(v.c_str()), PseudonymousUid(kKey, "1.2.840.99999.1.1"));
  ds.findAndGetOFString(DCM_PatientIdentityRemoved, v);
  EXPECT_STREQ(v.c_str(), "YES");
  ds.findAndGetOFString(DCM_LongitudinalTemporalInformationModified, v);
  EXPECT_STREQ(v.c_str(), "REMOVED");
  DcmItem* code = nullptr;
  ASSERT_TRUE(ds.findAndGetSequenceItem(DCM_DeidentificationMethodCodeSequence, code, 0).good());
  code->findAndGetOFString(DCM_CodeValue, v);
  EXPECT_STREQ(v.c_str(), "113100");
  EXPECT_TRUE(ds.tagExists(DCM_PixelData));
  EXPECT_FALSE(ds.tagExists(DcmTagKey(0x0009, 0x1001)));
  EXPECT_FALSE(ds.tagExists(DcmTagKey(0x6000, 0x3000)));
}

// Events late in the day keep their order: a pair that passes midnight
// carries the date with it.
TEST(Deid, DateAndTimePairsMoveAsOneInstant) {
  DeidOptions dates;
  dates.modified_dates = true;
  const Phi<std::string> id("MRN-00042");
  const int seconds = TimeShiftSeconds(kKey, id), days = DateShiftDays(kKey, id);
  // A time this far before midnight passes it after the shift.
  const int before = std::max(1, 86400 - seconds + 60) % 86400;
  char series[32];
  std::snprintf(series, sizeof series, "%02d%02d%02d", before / 3600, before / 60 % 60, before % 60);
  DcmDataset ds;
  Plant(ds, "MRN-00042", "20240315", "1.2.840.99999.1");
  Put(ds, DCM_SeriesDate, "20240315");
  Put(ds, DCM_SeriesTime, series);
  Put(ds, DCM_AcquisitionDateTime, (std::string("20240315") + series).c_str());
  ASSERT_TRUE(DeidentifyDataset(ds, kKey, dates).ok());
  OFString d, t, dt;
  ds.findAndGetOFString(DCM_SeriesDate, d);
  ds.findAndGetOFString(DCM_SeriesTime, t);
  ds.findAndGetOFString(DCM_AcquisitionDateTime, dt);
  EXPECT_EQ(std::string(d.c_str()) + t.c_str(), std::string(dt.c_str()));  // the pair and the DT agree
  EXPECT_EQ(std::string(dt.c_str()), ShiftDicomDateTime(std::string("20240315") + series, days, seconds));
  if (before + seconds >= 86400) {
    EXPECT_EQ(std::string(d.c_str()), ShiftDicomDate("20240315", days + 1));
  }
}

// A PatientID inside a sequence (another system's identifier for the
// patient) is emptied; the top-level one becomes the pseudonym.
TEST(Deid, ANestedPatientIdIsNotKept) {
  DcmDataset ds;
  Plant(ds, "MRN-00042", "20240315", "1.2.840.99999.1");
  DcmItem* item = nullptr;
  // A sequence the profile keeps (the Modality LUT), holding a PatientID.
  ASSERT_TRUE(ds.findOrCreateSequenceItem(DCM_ModalityLUTSequence, item, -2).good());
  Put(*item, DCM_ModalityLUTType, "OD");
  Put(*item, DCM_PatientID, "NESTED-MRN-1");
  ASSERT_TRUE(DeidentifyDataset(ds, kKey, DeidOptions{}).ok());
  ASSERT_TRUE(ds.findAndGetSequenceItem(DCM_ModalityLUTSequence, item, 0).good());  // the sequence stays
  EXPECT_TRUE(item->tagExists(DCM_ModalityLUTType));
  std::vector<std::string> values;
  Collect(ds, &values);
  for (const auto& v : values) EXPECT_EQ(v.find("NESTED-MRN-1"), std::string::npos) << v;
  OFString top;
  ds.findAndGetOFString(DCM_PatientID, top);
  EXPECT_EQ(std::string(top.c_str()), PatientPseudonym(kKey, Phi<std::string>("MRN-00042")));
}

// Default-deny: an attribute the table does not list is removed unless an
// image needs it to stay a decodable, labelled CR/DX object.
TEST(Deid, AttributesOutsideTheTableAreRemovedUnlessTheImageNeedsThem) {
  const DeidOptions none;
  EXPECT_EQ(ResolveDeidAction(0x0020, 0x0013, none), DeidAction::kRemove);  // Instance Number
  EXPECT_EQ(ResolveDeidAction(0x0018, 0x0060, none), DeidAction::kRemove);  // KVP
  EXPECT_EQ(ResolveDeidAction(0x0028, 0x1050, none), DeidAction::kKeep);    // Window Center
  EXPECT_EQ(ResolveDeidAction(0x0028, 0x3000, none), DeidAction::kKeep);    // Modality LUT Sequence
  EXPECT_EQ(ResolveDeidAction(0x0018, 0x5101, none), DeidAction::kKeep);    // View Position
  for (const auto& [g, e] : KeptOutsideTheTableList()) EXPECT_EQ(ResolveDeidAction(g, e, none), DeidAction::kKeep);
  DcmDataset ds;
  Plant(ds, "MRN-00042", "20240315", "1.2.840.99999.1");
  Put(ds, DCM_InstanceNumber, "4242");
  Put(ds, DCM_ViewPosition, "PA");
  Put(ds, DCM_WindowCenter, "2047");
  ASSERT_TRUE(DeidentifyDataset(ds, kKey, DeidOptions{}).ok());
  EXPECT_FALSE(ds.tagExists(DCM_InstanceNumber));
  EXPECT_TRUE(ds.tagExists(DCM_ViewPosition));
  EXPECT_TRUE(ds.tagExists(DCM_WindowCenter));
  EXPECT_TRUE(ds.tagExists(DCM_Rows));
  EXPECT_TRUE(ds.tagExists(DCM_SOPClassUID));
}

TEST(Deid, SamePatientLinksAcrossStudiesDifferentKeysDoNot) {
  DcmDataset a, b, c;
  Plant(a, "MRN-00042", "20240315", "1.2.840.99999.1");
  Plant(b, "MRN-00042", "20240401", "1.2.840.99999.2");
  Plant(c, "MRN-00042", "20240315", "1.2.840.99999.1");
  DeidOptions dates;
  dates.modified_dates = true;
  auto sa = DeidentifyDataset(a, kKey, dates);
  auto sb = DeidentifyDataset(b, kKey, dates);
  auto sc = DeidentifyDataset(c, kOtherKey, dates);
  ASSERT_TRUE(sa.ok() && sb.ok() && sc.ok());
  EXPECT_EQ(sa->patient_pseudonym, sb->patient_pseudonym);
  EXPECT_NE(sa->patient_pseudonym, sc->patient_pseudonym);
  OFString da, db;
  a.findAndGetOFString(DCM_StudyDate, da);
  b.findAndGetOFString(DCM_StudyDate, db);
  // Study Date and Study Time move as one instant (the time may carry the
  // date past midnight): the 17-day interval between the studies is kept.
  OFString ta0, tb0;
  a.findAndGetOFString(DCM_StudyTime, ta0);
  b.findAndGetOFString(DCM_StudyTime, tb0);
  const std::string instant_a = ShiftDicomDateTime("20240315101245", sa->date_shift_days, sa->time_shift_seconds);
  const std::string instant_b = ShiftDicomDateTime("20240401101245", sa->date_shift_days, sa->time_shift_seconds);
  EXPECT_EQ(std::string(da.c_str()) + ta0.c_str(), instant_a);
  EXPECT_EQ(std::string(db.c_str()) + tb0.c_str(), instant_b);
  EXPECT_NE(std::string(da.c_str()), "20240315");
  // Times of day move too, by the patient's own seconds: the planted
  // 10:12:45 is gone with every other planted value.
  OFString ta, tb;
  a.findAndGetOFString(DCM_StudyTime, ta);
  b.findAndGetOFString(DCM_StudyTime, tb);
  EXPECT_EQ(std::string(ta.c_str()), ShiftDicomTime("101245", sa->time_shift_seconds));  // around the clock
  EXPECT_EQ(std::string(ta.c_str()), std::string(tb.c_str()));  // same patient, same shift
  EXPECT_EQ(Survivors(a), std::vector<std::string>{});
  OFString v;
  a.findAndGetOFString(DCM_LongitudinalTemporalInformationModified, v);
  EXPECT_STREQ(v.c_str(), "MODIFIED");
}

// Attributes a writer stored with VR UN are de-identified by their dictionary
// VR: each UID gets its own pseudonym (not one made from its hex bytes, the
// same for every UID of that length) and a date is shifted.
TEST(Deid, AttributesStoredAsUnknownVrAreDeidentifiedByTheirDictionaryVr) {
  auto un = [](DcmDataset& ds, const DcmTagKey& key, const std::string& value) {
    auto* el = new DcmOtherByteOtherWord(DcmTag(key, EVR_UN));
    std::string bytes = value;
    if (bytes.size() % 2 != 0) bytes.push_back('\0');
    el->putUint8Array(reinterpret_cast<const Uint8*>(bytes.data()), static_cast<unsigned long>(bytes.size()));
    ASSERT_TRUE(ds.insert(el, OFTrue).good());
  };
  DeidOptions dates;
  dates.modified_dates = true;
  DcmDataset a, b;
  Plant(a, "MRN-00042", "20240315", "1.2.840.99999.1");
  Plant(b, "MRN-00042", "20240315", "1.2.840.99999.1");
  un(a, DCM_StudyInstanceUID, "1.2.840.99999.7.1");
  un(b, DCM_StudyInstanceUID, "1.2.840.99999.7.2");  // same length, another study
  un(a, DCM_StudyDate, "20240315");
  auto sa = DeidentifyDataset(a, kKey, dates);
  auto sb = DeidentifyDataset(b, kKey, dates);
  ASSERT_TRUE(sa.ok() && sb.ok());
  OFString ua, ub, date;
  ASSERT_TRUE(a.findAndGetOFString(DCM_StudyInstanceUID, ua).good());
  ASSERT_TRUE(b.findAndGetOFString(DCM_StudyInstanceUID, ub).good());
  EXPECT_EQ(std::string(ua.c_str()), PseudonymousUid(kKey, "1.2.840.99999.7.1"));
  EXPECT_EQ(std::string(ub.c_str()), PseudonymousUid(kKey, "1.2.840.99999.7.2"));
  DcmElement* el = nullptr;
  ASSERT_TRUE(a.findAndGetElement(DCM_StudyInstanceUID, el).good());
  EXPECT_EQ(el->ident(), EVR_UI);
  ASSERT_TRUE(a.findAndGetOFString(DCM_StudyDate, date).good());
  EXPECT_EQ(std::string(date.c_str()), ShiftDicomDate("20240315", sa->date_shift_days));
}

TEST(Deid, RefusesAnEmptyKey) {
  DcmDataset ds;
  EXPECT_EQ(DeidentifyDataset(ds, {}, DeidOptions{}).status().code(), absl::StatusCode::kInvalidArgument);
}

// The output is a valid DICOM file for an independent parser (dcmtk's dcmdump).
TEST(Deid, OutputParsesWithDcmdump) {
  if (std::system("command -v dcmdump >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "dcmdump is not installed (package dcmtk; deploy/install-deps.sh installs it)";
  }
  DcmFileFormat file;
  Plant(*file.getDataset(), "MRN-00042", "20240315", "1.2.840.99999.1");
  ASSERT_TRUE(DeidentifyDataset(*file.getDataset(), kKey, DeidOptions{}).ok());
  const std::string path = ::testing::TempDir() + "/deid_out.dcm";
  ASSERT_TRUE(file.saveFile(path.c_str(), EXS_LittleEndianExplicit, EET_ExplicitLength, EGL_recalcGL, EPD_noChange, 0,
                            0, EWM_createNewMeta)
                  .good());
  std::string out;
  EXPECT_EQ(fedtune::testing::RunCommand("dcmdump " + path, &out), 0) << out;
  EXPECT_EQ(out.find("E: "), std::string::npos) << out;
  EXPECT_NE(out.find("(0012,0062) CS [YES]"), std::string::npos) << out;
  for (const std::string& planted : kPlanted) EXPECT_EQ(out.find(planted), std::string::npos) << planted;
}

}  // namespace
}  // namespace fedtune::ingest
