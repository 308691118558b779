// Fuzz target: read_csv. The first byte chooses the options, the rest is the file:
//   bit 0: header; bits 1-2: no label, label_index, label_column "label", both (a usage_error);
//   bits 3-4: delimiter ',' ';' '\t' ' '; bits 5-7: label_index.
#include <cstddef>
#include <cstdint>

#include "batchwise/data/csv.hpp"
#include "fuzz_common.hpp"

namespace {

std::vector<bw_fuzz::seed> seeds() {
    using bw_fuzz::as_bytes;
    const auto with_mode = [](unsigned char mode, std::string_view text) {
        bw_fuzz::bytes out = {mode};
        out.insert(out.end(), text.begin(), text.end());
        return out;
    };
    return {
        {"header_label_name", with_mode(0x05, "a,b,label\n1,2,0\n3.5,-4e2,1\n")},
        {"header_label_index", with_mode(0x43, "x, y ,z\r\n1,2,3\r\n+4,nan,inf\r\n\r\n")},
        {"no_header", with_mode(0x00, "1,2\n3,4\n5,6\n")},
        {"semicolons_bom", with_mode(0x09, "\xEF\xBB\xBF" "p;q\n1e-50;2\n")},
        {"tabs", with_mode(0x10, "1\t2\t3\n4\t5\t6\n")},
        {"spaces_label", with_mode(0x3A, "1 2 3\n4 5 6\n")},
    };
}

const std::filesystem::path& scratch() {
    static const std::filesystem::path path = bw_fuzz::scratch_path("csv", ".csv");
    return path;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
    bw_fuzz::maybe_write_seeds(argc, argv, seeds);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const unsigned mode = data[0];
    batchwise::data::csv_options options;
    options.header = mode & 1;
    const unsigned label = (mode >> 1) & 3;
    if (label & 1) options.label_index = static_cast<int>(mode >> 5);
    if (label & 2) options.label_column = "label";
    constexpr char delimiters[] = {',', ';', '\t', ' '};
    options.delimiter = delimiters[(mode >> 3) & 3];
    bw_fuzz::write_file(scratch(), data + 1, size - 1);
    return bw_fuzz::run_one([&] { (void)batchwise::data::read_csv(scratch(), options); });
}
