#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/json_input.h"

namespace sparta {

// Tensor bytes are written and read as they sit in memory; the format is
// little-endian, so a big-endian host would need byte swapping.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;
constexpr const char* kMetadataKey = "__metadata__";
// More dimensions than any real tensor has; keeps shapes (and the messages
// that print them) small whatever the header declares.
constexpr size_t kMaxRank = 32;
constexpr DType kAllDTypes[] = {DType::F32, DType::BF16, DType::F16, DType::I32,
                                DType::I64, DType::U8,   DType::Q4};

// Bytes for a tensor of `shape` and `dtype`, or -1 if the count overflows int64.
int64_t checked_nbytes(const Shape& shape, DType dtype) {
  int64_t n = 1;
  for (int64_t d : shape)
    if (d == 0) return 0;  // a zero dimension makes the tensor empty whatever the others are
  for (int64_t d : shape)
    if (__builtin_mul_overflow(n, d, &n)) return -1;
  if (dtype == DType::Q4) return n / 2 + n % 2;
  int64_t bytes;
  if (__builtin_mul_overflow(n, static_cast<int64_t>(dtype_size(dtype)), &bytes)) return -1;
  return bytes;
}

std::string dtype_list() {
  std::string s;
  for (DType t : kAllDTypes) s += cat(s.empty() ? "" : ", ", dtype_name(t));
  return s;
}

// `name` quoted for a message: names come from the file and may be megabytes long.
std::string quoted_name(const std::string& name) {
  constexpr size_t kMax = 120;
  if (name.size() <= kMax) return cat("'", name, "'");
  return cat("'", name.substr(0, kMax), "...' (", name.size(), " bytes)");
}

// One validated header entry.
struct EntryInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

class Reader {
 public:
  explicit Reader(const std::filesystem::path& path) : path_(path), where_(path.string()) {}
  ~Reader() {
    if (fd_ >= 0) ::close(fd_);
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(cat("[safetensors] ", where_, ": ", what));
  }

  void open() {
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
      if (errno == ENOENT) fail("file does not exist");
      fail(cat("cannot open: ", std::strerror(errno)));
    }
    struct stat st {};
    if (::fstat(fd_, &st) != 0) fail(cat("cannot stat: ", std::strerror(errno)));
    if (S_ISDIR(st.st_mode)) fail("is a folder, not a safetensors file");
    file_size_ = static_cast<uint64_t>(st.st_size);
  }

  void pread_exact(void* dst, uint64_t n, uint64_t offset) const {
    char* p = static_cast<char*>(dst);
    while (n > 0) {
      ssize_t k = ::pread(fd_, p, n, static_cast<off_t>(offset));
      if (k < 0) {
        if (errno == EINTR) continue;
        fail(cat("read failed at byte ", offset, ": ", std::strerror(errno)));
      }
      // The size was checked up front, so 0 means the file shrank under us.
      if (k == 0) fail(cat("unexpected end of file at byte ", offset, " (file changed while reading?)"));
      p += k;
      n -= static_cast<uint64_t>(k);
      offset += static_cast<uint64_t>(k);
    }
  }

  nlohmann::json parse_header(uint64_t& header_len) {
    if (file_size_ < 8)
      fail(cat("file is ", file_size_, " bytes, too short to hold the 8-byte header length"));
    unsigned char len_bytes[8];
    pread_exact(len_bytes, 8, 0);
    header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
    if (header_len > kMaxHeaderBytes)
      fail(cat("header length ", header_len, " exceeds the ", kMaxHeaderBytes / 1000000, " MB limit"));
    if (header_len > file_size_ - 8)
      fail(cat("header length ", header_len, " exceeds the ", file_size_ - 8,
               " bytes after the length field (truncated file?)"));
    std::string text(header_len, '\0');
    pread_exact(text.data(), header_len, 8);

    nlohmann::json header = parse_json_input(text, cat("[safetensors] ", where_, ": header"));
    if (!header.is_object()) fail(cat("header is a JSON ", header.type_name(), ", expected an object"));
    return header;
  }

  EntryInfo parse_entry(const std::string& name, const nlohmann::json& j) const {
    EntryInfo e;
    e.name = name;
    const std::string t = cat("tensor ", quoted_name(name));
    if (name.empty()) fail("tensor with an empty name");
    if (!j.is_object())
      fail(cat(t, " is a JSON ", j.type_name(), ", expected an object with dtype, shape, data_offsets"));
    for (const auto& [k, v] : j.items())
      if (k != "dtype" && k != "shape" && k != "data_offsets") fail(cat(t, " has unknown field ", quoted_name(k)));
    for (const char* k : {"dtype", "shape", "data_offsets"})
      if (!j.contains(k)) fail(cat(t, " is missing '", k, "'"));

    const auto& jd = j["dtype"];
    if (!jd.is_string()) fail(cat(t, " dtype is a JSON ", jd.type_name(), ", expected a string"));
    const auto& dname = jd.get_ref<const std::string&>();
    bool known = false;
    for (DType d : kAllDTypes)
      if (dtype_name(d) == dname) e.dtype = d, known = true;
    if (!known)
      fail(cat(t, " has unknown dtype ", quoted_name(dname), " (expected one of ", dtype_list(), ")"));

    const auto& js = j["shape"];
    if (!js.is_array()) fail(cat(t, " shape is a JSON ", js.type_name(), ", expected an array of integers"));
    if (js.size() > kMaxRank) fail(cat(t, " shape has ", js.size(), " dimensions, more than the ", kMaxRank, " supported"));
    for (const auto& d : js) {
      if (d.is_number_unsigned()) {
        uint64_t u = d.get<uint64_t>();
        if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          fail(cat(t, " has dimension ", u, " that overflows int64"));
        e.shape.push_back(static_cast<int64_t>(u));
      } else if (d.is_number_integer()) {
        int64_t v = d.get<int64_t>();
        if (v < 0) fail(cat(t, " has negative dimension ", v, " in shape ", describe_json(js)));
        e.shape.push_back(v);
      } else {
        fail(cat(t, " shape ", describe_json(js), " holds a ", d.type_name(), ", expected integers"));
      }
    }
    const int64_t need = checked_nbytes(e.shape, e.dtype);
    if (need < 0) fail(cat(t, " shape ", describe_json(js), " has an element count that overflows int64"));

    const auto& jo = j["data_offsets"];
    if (!jo.is_array() || jo.size() != 2 || !jo[0].is_number_integer() || !jo[1].is_number_integer())
      fail(cat(t, " data_offsets ", describe_json(jo), " is not an array of two integers"));
    for (const auto& o : jo)
      if (!o.is_number_unsigned()) fail(cat(t, " has negative data_offsets ", jo.dump()));
    e.begin = jo[0].get<uint64_t>();
    e.end = jo[1].get<uint64_t>();
    if (e.begin > e.end) fail(cat(t, " data_offsets [", e.begin, ", ", e.end, ") has begin > end"));
    if (e.end > data_size_)
      fail(cat(t, " data_offsets [", e.begin, ", ", e.end, ") end past the data region of ", data_size_,
               " bytes (truncated file?)"));
    if (e.end - e.begin != static_cast<uint64_t>(need))
      fail(cat(t, " data_offsets [", e.begin, ", ", e.end, ") but shape ", shape_str(e.shape), " ",
               dtype_name(e.dtype), " needs ", need, " bytes"));
    return e;
  }

  // The validated header entries, sorted by data offset; reads no tensor bytes.
  std::vector<EntryInfo> read_header(std::map<std::string, std::string>& metadata) {
    open();
    uint64_t header_len = 0;
    nlohmann::json header = parse_header(header_len);
    data_start_ = 8 + header_len;
    data_size_ = file_size_ - data_start_;

    std::vector<EntryInfo> entries;
    for (const auto& [key, value] : header.items()) {
      if (key == kMetadataKey) {
        if (!value.is_object())
          fail(cat("__metadata__ is a JSON ", value.type_name(), ", expected an object of strings"));
        for (const auto& [mk, mv] : value.items()) {
          if (!mv.is_string())
            fail(cat("__metadata__ key ", quoted_name(mk), " is a JSON ", mv.type_name(), ", expected a string"));
          metadata[mk] = mv.get<std::string>();
        }
        continue;
      }
      entries.push_back(parse_entry(key, value));
    }

    // The byte ranges must tile [0, data_size) exactly: sorted by offset,
    // each starts where the previous ended (empty tensors sit at a boundary).
    std::sort(entries.begin(), entries.end(), [](const EntryInfo& a, const EntryInfo& b) {
      return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
    });
    uint64_t cursor = 0;
    const EntryInfo* prev = nullptr;
    for (const auto& e : entries) {
      if (e.begin < cursor)
        fail(cat("tensor ", quoted_name(e.name), " data_offsets [", e.begin, ", ", e.end, ") overlaps tensor ",
                 quoted_name(prev->name), " [", prev->begin, ", ", prev->end, ")"));
      if (e.begin > cursor)
        fail(cat("bytes [", cursor, ", ", e.begin, ") of the data region belong to no tensor (hole before ",
                 quoted_name(e.name), ")"));
      cursor = e.end;
      prev = &e;
    }
    if (cursor != data_size_)
      fail(cat("bytes [", cursor, ", ", data_size_, ") at the end of the data region belong to no tensor"));
    return entries;
  }

  void load(std::map<std::string, Tensor>& tensors, std::vector<std::string>& order,
            std::map<std::string, std::string>& metadata) {
    for (const auto& e : read_header(metadata)) {
      Tensor t = Tensor::empty(e.shape, e.dtype);
      if (e.end > e.begin) pread_exact(t.raw(), e.end - e.begin, data_start_ + e.begin);
      tensors.emplace(e.name, std::move(t));
      order.push_back(e.name);
    }
  }

 private:
  std::filesystem::path path_;
  std::string where_;
  int fd_ = -1;
  uint64_t file_size_ = 0;
  uint64_t data_start_ = 0;
  uint64_t data_size_ = 0;
};

}  // namespace

void write_safetensors(const std::filesystem::path& path, const std::vector<SafetensorsEntry>& entries,
                       const std::map<std::string, std::string>& metadata) {
  const std::string where = path.string();
  // ordered_json keeps tensors in the order given, which makes the header
  // read naturally (offsets ascend); readers must not rely on it.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header[kMetadataKey] = std::move(m);
  }
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& e : entries) {
    SPARTA_CHECK(!e.name.empty(), "[safetensors] ", where, ": tensor with an empty name");
    SPARTA_CHECK(e.name != kMetadataKey, "[safetensors] ", where, ": '", kMetadataKey,
                 "' is reserved, not a tensor name");
    SPARTA_CHECK(seen.insert(e.name).second, "[safetensors] ", where, ": tensor name '", e.name,
                 "' appears twice");
    for (int64_t d : e.tensor.shape())
      SPARTA_CHECK(d >= 0, "[safetensors] ", where, ": tensor '", e.name, "' has negative dimension in ",
                   shape_str(e.tensor.shape()));
    const int64_t bytes = checked_nbytes(e.tensor.shape(), e.tensor.dtype());
    SPARTA_CHECK(bytes >= 0, "[safetensors] ", where, ": tensor '", e.name, "' shape overflows int64");
    SPARTA_CHECK(bytes == 0 || e.tensor.defined(), "[safetensors] ", where, ": tensor '", e.name,
                 "' has no data");
    nlohmann::ordered_json info = nlohmann::ordered_json::object();
    info["dtype"] = std::string(dtype_name(e.tensor.dtype()));
    info["shape"] = e.tensor.shape();
    info["data_offsets"] = {offset, offset + static_cast<uint64_t>(bytes)};
    header[e.name] = std::move(info);
    offset += static_cast<uint64_t>(bytes);
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    // dump() refuses names or metadata that are not valid UTF-8.
    throw Error(cat("[safetensors] ", where, ": cannot encode header: ", e.what()));
  }
  // Spaces are JSON whitespace, so padding keeps the header valid while the
  // data region starts on an 8-byte boundary.
  text.append((8 - text.size() % 8) % 8, ' ');

  unsigned char len_bytes[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(n >> (8 * i));

  AtomicFileWriter w(path);
  w.write(len_bytes, 8);
  w.write(text);
  for (const auto& e : entries)
    if (e.tensor.nbytes() > 0) w.write(e.tensor.raw(), e.tensor.nbytes());
  w.commit();
}

std::vector<SafetensorsTensorInfo> SafetensorsFile::read_header(const std::filesystem::path& path) {
  std::map<std::string, std::string> metadata;
  std::vector<SafetensorsTensorInfo> infos;
  for (auto& e : Reader(path).read_header(metadata))
    infos.push_back({std::move(e.name), e.dtype, std::move(e.shape)});
  return infos;
}

SafetensorsFile SafetensorsFile::read(const std::filesystem::path& path) {
  SafetensorsFile f;
  f.path_ = path;
  Reader(path).load(f.tensors_, f.order_, f.metadata_);
  return f;
}

bool SafetensorsFile::has(const std::string& name) const { return tensors_.count(name) > 0; }

const Tensor& SafetensorsFile::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end())
    throw Error(cat("[checkpoint] ", path_.string(), ": tensor '", name, "' is missing (the file has ",
                    tensors_.size(), " tensors)"));
  return it->second;
}

const Tensor& SafetensorsFile::get(const std::string& name, const Shape& expect_shape,
                                   DType expect_dtype) const {
  const Tensor& t = get(name);
  if (t.shape() != expect_shape || t.dtype() != expect_dtype)
    throw Error(cat("[checkpoint] ", path_.string(), ": tensor '", name, "' has shape ", shape_str(t.shape()),
                    " ", dtype_name(t.dtype()), " but the model expects ", shape_str(expect_shape), " ",
                    dtype_name(expect_dtype)));
  return t;
}

}  // namespace sparta
