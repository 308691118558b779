// Numeric CSV files as a feature matrix and an optional label column, for tabular datasets;
// every malformed line is refused with its file, line and column rather than read as zero.
#pragma once

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "batchwise/core/errors.hpp"
#include "batchwise/core/xtensor.hpp"

namespace batchwise::data {

/// How read_csv reads a file. The label column is chosen by name (needs a header) or by
/// 0-based index; with neither, every column is a feature and there are no labels.
struct csv_options {
    bool header = true;             ///< the first line names the columns
    std::string label_column = "";  ///< the label column by name (needs a header); "" for none
    int label_index = -1;           ///< the label column by 0-based index; -1: none
    /// The character between fields.
    char delimiter = ',';
};

/// What read_csv returns: one row per data line.
struct csv_data {
    xt::xtensor<float, 2> features;          ///< (rows, columns without the label)
    xt::xtensor<float, 1> labels;            ///< (rows,), or (0,) when no label column was chosen
    std::vector<std::string> feature_names;  ///< from the header, label excluded; empty without one
};

namespace csv_detail {

using batchwise::detail::in_quotes;

struct line {
    std::string_view text;
    std::size_t number = 0;  // 1-based, as editors count
};

/// The spaces and tabs around a field are layout, not data, unless one of them is the delimiter.
inline std::string_view trim(std::string_view s, char delimiter) {
    const auto blank = [delimiter](char c) { return (c == ' ' || c == '\t') && c != delimiter; };
    while (!s.empty() && blank(s.front())) s.remove_prefix(1);
    while (!s.empty() && blank(s.back())) s.remove_suffix(1);
    return s;
}

inline bool is_blank(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t'; });
}

class reader {
public:
    reader(const std::filesystem::path& path, const csv_options& options) : path_(path), options_(options) {}

    [[noreturn]] void fail(const std::string& what) const {
        throw io_error("read_csv: " + in_quotes(path_.string()) + ": " + what);
    }

    [[noreturn]] void fail_line(std::size_t number, const std::string& what) const {
        throw io_error("read_csv: " + in_quotes(path_.string()) + ", line " + std::to_string(number) + ": " + what);
    }

    [[noreturn]] void fail_field(std::size_t number, std::size_t column, const std::string& what) const {
        std::string name;
        if (column < names_.size() && !names_[column].empty()) name = " (" + in_quotes(names_[column]) + ")";
        throw io_error("read_csv: " + in_quotes(path_.string()) + ", line " + std::to_string(number) + ", column " +
                       std::to_string(column + 1) + name + ": " + what);
    }

    std::string read_file() const {
        std::error_code ec;
        const auto status = std::filesystem::status(path_, ec);
        if (!std::filesystem::exists(status)) fail("no such file");
        if (!std::filesystem::is_regular_file(status)) fail("not a regular file");
        std::ifstream in(path_, std::ios::binary);
        if (!in) fail("cannot open for reading");
        std::string text(std::istreambuf_iterator<char>(in), {});
        if (in.bad()) fail("read error");
        return text;
    }

    /// Splits LINE into FIELDS (reused, so rows allocate nothing once it has grown).
    void split(const line& at, std::vector<std::string_view>& fields) const {
        fields.clear();
        std::string_view rest = at.text;
        for (;;) {
            const std::size_t cut = rest.find(options_.delimiter);
            const std::string_view field = trim(rest.substr(0, cut), options_.delimiter);
            if (field.find('"') != std::string_view::npos)
                fail_field(at.number, fields.size(),
                           "quoted field " + std::string(field) +
                               "; read_csv does not support quoting, expected plain numbers and names");
            fields.push_back(field);
            if (cut == std::string_view::npos) break;
            rest.remove_prefix(cut + 1);
        }
    }

    float number(const line& at, std::size_t column, std::string_view text) const {
        if (text.empty()) fail_field(at.number, column, "empty field; expected a number");
        // from_chars refuses the leading '+' some writers put before positive numbers.
        std::string_view digits = text;
        if (digits.size() > 1 && digits.front() == '+' && digits[1] != '-' && digits[1] != '+')
            digits.remove_prefix(1);
        float value = 0;
        const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
        if (ec == std::errc::result_out_of_range) {
            // Underflow is not worth refusing a file for: read it as the nearest float (0 or a
            // denormal). Overflow is, as it is no longer the value written.
            double wide = 0;
            const auto [wide_end, wide_ec] = std::from_chars(digits.data(), digits.data() + digits.size(), wide);
            if (wide_ec == std::errc() && wide_end == digits.data() + digits.size() && wide > -1.0 && wide < 1.0)
                return static_cast<float>(wide);
            fail_field(at.number, column, "number " + in_quotes(text) + " is outside the range of float");
        }
        if (ec != std::errc() || end != digits.data() + digits.size())
            fail_field(at.number, column, "expected a number, found " + in_quotes(text));
        return value;
    }

    csv_data read() {
        const std::string text = read_file();
        std::string_view rest = text;
        if (rest.starts_with("\xEF\xBB\xBF")) rest.remove_prefix(3);  // UTF-8 BOM, as Excel writes

        std::vector<line> lines;
        for (std::size_t line_number = 1; !rest.empty(); ++line_number) {
            const std::size_t cut = rest.find('\n');
            std::string_view current = rest.substr(0, cut);
            if (current.ends_with('\r')) current.remove_suffix(1);
            lines.push_back({current, line_number});
            rest.remove_prefix(cut == std::string_view::npos ? rest.size() : cut + 1);
        }
        // Blank lines at the end are an editor's habit; anywhere else they are a lost row.
        while (!lines.empty() && is_blank(lines.back().text)) lines.pop_back();
        if (lines.empty())
            fail(std::string("empty file; expected ") + (options_.header ? "a header line and " : "") +
                 "at least one data row");
        for (const line& at : lines)
            if (is_blank(at.text)) fail_line(at.number, "empty line; expected a row of fields");

        if (options_.label_index < -1)
            throw usage_error("read_csv: label_index " + std::to_string(options_.label_index) +
                              "; expected a 0-based column index, or -1 for no labels");
        if (!options_.label_column.empty() && options_.label_index >= 0)
            throw usage_error("read_csv: both label_column " + in_quotes(options_.label_column) + " and label_index " +
                              std::to_string(options_.label_index) + " are set; expected one of them");
        if (!options_.label_column.empty() && !options_.header)
            throw usage_error("read_csv: label_column " + in_quotes(options_.label_column) +
                              " needs header = true to find it; expected label_index for a file without header");

        std::vector<std::string_view> fields;
        std::size_t first_row = 0;
        if (options_.header) {
            split(lines.front(), fields);
            names_.assign(fields.begin(), fields.end());
            first_row = 1;
            if (lines.size() == 1)
                fail_line(lines.front().number, "the header is the only line; expected at least one data row after it");
        } else {
            split(lines.front(), fields);
        }
        const std::size_t columns = fields.size();

        std::ptrdiff_t label = options_.label_index;
        if (!options_.label_column.empty()) {
            const auto found = std::find(names_.begin(), names_.end(), options_.label_column);
            if (found == names_.end()) {
                std::string list;
                for (const auto& name : names_) list += (list.empty() ? "" : ", ") + in_quotes(name);
                fail_line(lines.front().number, "no column named " + in_quotes(options_.label_column) +
                                                    " for the labels; the header has " + list);
            }
            if (std::find(found + 1, names_.end(), options_.label_column) != names_.end())
                fail_line(lines.front().number, "the label column name " + in_quotes(options_.label_column) +
                                                    " appears more than once in the header; expected it once");
            label = found - names_.begin();
        }
        if (label >= static_cast<std::ptrdiff_t>(columns))
            fail_line(lines.front().number, "label_index " + std::to_string(label) + " but the line has " +
                                                std::to_string(columns) + " fields (0-based index; expected at most " +
                                                std::to_string(columns - 1) + ")");
        const bool labelled = label >= 0;
        const auto label_column = static_cast<std::size_t>(label);

        csv_data data;
        const std::size_t rows = lines.size() - first_row;
        const std::size_t feature_count = columns - (labelled ? 1 : 0);
        data.features = xt::xtensor<float, 2>::from_shape({rows, feature_count});
        data.labels = xt::xtensor<float, 1>::from_shape({labelled ? rows : 0});
        for (std::size_t c = 0; c < names_.size(); ++c)
            if (!labelled || c != label_column) data.feature_names.push_back(names_[c]);

        float* out = data.features.data();
        for (std::size_t r = 0; r < rows; ++r) {
            const line& at = lines[first_row + r];
            split(at, fields);
            if (fields.size() != columns)
                fail_line(at.number, "expected " + std::to_string(columns) + " fields" +
                                         (options_.header ? " as in the header" : " as on the first line") +
                                         ", found " + std::to_string(fields.size()) + " (split on " +
                                         in_quotes(std::string_view(&options_.delimiter, 1)) + ")");
            for (std::size_t c = 0; c < columns; ++c) {
                const float value = number(at, c, fields[c]);
                if (labelled && c == label_column)
                    data.labels(r) = value;
                else
                    *out++ = value;
            }
        }
        return data;
    }

private:
    const std::filesystem::path& path_;
    const csv_options& options_;
    std::vector<std::string> names_;
};

}  // namespace csv_detail

/// Reads a numeric CSV file into features and (optionally) labels; see csv_options. Handles
/// `\r\n` line ends, a UTF-8 BOM and blank trailing lines; numbers are parsed with std::from_chars
/// ("nan" and "inf" included). Throws batchwise::io_error naming the file, the 1-based line and
/// column and what was expected for: a wrong field count, a field that is not a number, a quoted
/// field (not supported), a missing label column, an empty file or one without data rows; and
/// batchwise::usage_error for contradictory options.
inline csv_data read_csv(const std::filesystem::path& path, const csv_options& options = {}) {
    return csv_detail::reader(path, options).read();
}

}  // namespace batchwise::data
