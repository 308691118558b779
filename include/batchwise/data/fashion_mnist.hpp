// Fashion-MNIST from its four IDX files (as Debian's dataset-fashion-mnist installs them) as
// float images in [0, 1] and int labels, checked for consistent counts and label range.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "batchwise/core/errors.hpp"
#include "batchwise/core/xtensor.hpp"
#include "batchwise/data/dataset.hpp"
#include "batchwise/data/idx.hpp"

namespace batchwise::data {

/// The training and test sets of Fashion-MNIST.
struct fashion_mnist_arrays {
    xt::xtensor<float, 3> train_images;  ///< (60000, 28, 28), pixel / 255, in [0, 1]
    xt::xtensor<int, 1> train_labels;    ///< (60000,), class index 0..9
    xt::xtensor<float, 3> test_images;   ///< (10000, 28, 28), pixel / 255, in [0, 1]
    xt::xtensor<int, 1> test_labels;     ///< (10000,), class index 0..9
};

/// Class names by label, as Zalando's README lists them.
inline constexpr std::array<std::string_view, 10> fashion_mnist_class_names = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

namespace fashion_mnist_detail {

inline constexpr std::size_t side = 28;
inline constexpr int classes = 10;
inline constexpr std::string_view package_hint =
    "; the Debian package dataset-fashion-mnist provides these files (apt-get install dataset-fashion-mnist)";

using batchwise::detail::in_quotes;

/// DIR/NAME.gz, or DIR/NAME when someone has decompressed the files.
inline std::filesystem::path find_file(const std::filesystem::path& dir, const std::string& name) {
    std::error_code ec;
    const std::filesystem::path gz = dir / (name + ".gz");
    if (std::filesystem::is_regular_file(gz, ec)) return gz;
    const std::filesystem::path plain = dir / name;
    if (std::filesystem::is_regular_file(plain, ec)) return plain;
    throw io_error("read_fashion_mnist: neither " + in_quotes(gz) + " nor " + in_quotes(plain) + " exists" +
                   std::string(package_hint));
}

inline std::string layout(const idx_raw& raw) {
    std::string text = "(";
    for (std::size_t d = 0; d < raw.shape.size(); ++d) text += (d ? ", " : "") + std::to_string(raw.shape[d]);
    return text + (raw.shape.size() == 1 ? ",)" : ")") + " of " + std::string(idx_type_name(raw.type));
}

inline xt::xtensor<std::uint8_t, 3> image_bytes(const std::filesystem::path& path) {
    const idx_raw raw = read_idx_raw(path);
    if (raw.type != idx_type::ubyte || raw.shape.size() != 3 || raw.shape[1] != side || raw.shape[2] != side)
        throw data_error("read_fashion_mnist: " + in_quotes(path) + " holds " + layout(raw) +
                         "; expected (n, 28, 28) of ubyte images");
    auto result = xt::xtensor<std::uint8_t, 3>::from_shape({raw.shape[0], side, side});
    std::copy(raw.data.begin(), raw.data.end(), result.data());
    return result;
}

inline xt::xtensor<float, 3> images(const std::filesystem::path& path) {
    const xt::xtensor<std::uint8_t, 3> bytes = image_bytes(path);
    auto result = xt::xtensor<float, 3>::from_shape(bytes.shape());
    // Division rather than a multiply by 1/255, so 255 maps to exactly 1 (byte_value divides too).
    std::transform(bytes.begin(), bytes.end(), result.begin(),
                   [](std::uint8_t b) { return detail::byte_value(b, 255.0f); });
    return result;
}

inline xt::xtensor<int, 1> labels(const std::filesystem::path& path) {
    const idx_raw raw = read_idx_raw(path);
    if (raw.type != idx_type::ubyte || raw.shape.size() != 1)
        throw data_error("read_fashion_mnist: " + in_quotes(path) + " holds " + layout(raw) +
                         "; expected (n,) of ubyte labels");
    auto result = xt::xtensor<int, 1>::from_shape({raw.shape[0]});
    for (std::size_t i = 0; i < raw.data.size(); ++i) {
        if (raw.data[i] >= classes)
            throw data_error("read_fashion_mnist: " + in_quotes(path) + ": label " + std::to_string(raw.data[i]) +
                                 " of sample " + std::to_string(i) + "; expected 0..9",
                             i);
        result(i) = raw.data[i];
    }
    return result;
}

template <class Images>
void read_split(const std::filesystem::path& dir, const std::string& prefix, Images& images_out,
                xt::xtensor<int, 1>& labels_out) {
    const std::filesystem::path images_path = find_file(dir, prefix + "-images-idx3-ubyte");
    const std::filesystem::path labels_path = find_file(dir, prefix + "-labels-idx1-ubyte");
    if constexpr (std::is_same_v<typename Images::value_type, std::uint8_t>) {
        images_out = image_bytes(images_path);
    } else {
        images_out = images(images_path);
    }
    labels_out = labels(labels_path);
    if (images_out.shape(0) != labels_out.shape(0))
        throw data_error("read_fashion_mnist: " + in_quotes(images_path) + " holds " +
                         std::to_string(images_out.shape(0)) + " images but " + in_quotes(labels_path) + " holds " +
                         std::to_string(labels_out.shape(0)) + " labels; expected as many labels as images");
}

inline void require_directory(const std::filesystem::path& dir) {
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec))
        throw io_error("read_fashion_mnist: " + in_quotes(dir) + " is not a directory" + std::string(package_hint));
}

}  // namespace fashion_mnist_detail

/// Reads train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
/// t10k-labels-idx1-ubyte (each with or without .gz) from DIR. Throws batchwise::io_error for a
/// missing directory or file (naming the Debian package that provides them) and for damaged
/// files (see read_idx_raw); batchwise::data_error for images and labels of different counts,
/// images that are not 28x28 ubyte, or a label above 9 (data_error::sample() is its index).
inline fashion_mnist_arrays read_fashion_mnist(
    const std::filesystem::path& dir = "/usr/share/datasets/fashion-mnist") {
    fashion_mnist_detail::require_directory(dir);
    fashion_mnist_arrays result;
    fashion_mnist_detail::read_split(dir, "train", result.train_images, result.train_labels);
    fashion_mnist_detail::read_split(dir, "t10k", result.test_images, result.test_labels);
    return result;
}

/// The train and test splits as datasets of (28, 28) images in [0, 1] and class indices:
/// `auto [train, test] = bw::data::fashion_mnist();`
struct fashion_mnist_datasets {
    /// The 60000 training samples.
    Dataset train;
    /// The 10000 test samples.
    Dataset test;
};

/// Reads Fashion-MNIST from `dir` (where Debian's dataset-fashion-mnist puts it, by default)
/// as read_fashion_mnist does, with the same errors, and returns it as two datasets.
inline fashion_mnist_datasets fashion_mnist(
    const std::filesystem::path& dir = "/usr/share/datasets/fashion-mnist") {
    const fashion_mnist_arrays a = read_fashion_mnist(dir);
    return {Dataset(a.train_images, a.train_labels), Dataset(a.test_images, a.test_labels)};
}

/// fashion_mnist(), with the images kept as the files store them, one byte per pixel
/// (Dataset::of_bytes): every pixel reads as the same float, pixel / 255, in a quarter of the
/// memory, and a model on a device copies (data_on_device) and converts them there.
inline fashion_mnist_datasets fashion_mnist_bytes(
    const std::filesystem::path& dir = "/usr/share/datasets/fashion-mnist") {
    fashion_mnist_detail::require_directory(dir);
    xt::xtensor<std::uint8_t, 3> train_images, test_images;
    xt::xtensor<int, 1> train_labels, test_labels;
    fashion_mnist_detail::read_split(dir, "train", train_images, train_labels);
    fashion_mnist_detail::read_split(dir, "t10k", test_images, test_labels);
    return {Dataset::of_bytes(train_images, train_labels, 255.0f), Dataset::of_bytes(test_images, test_labels, 255.0f)};
}

}  // namespace batchwise::data
