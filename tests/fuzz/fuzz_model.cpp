// Model::load_weights and Model::load_checkpoint on fuzzed files, through the public API only,
// so the targets keep compiling while the checkpoint format and its checks change.
#include "fuzz_model.hpp"

#include <filesystem>
#include <string>

#include "batchwise/batchwise.hpp"
#include "npz_inputs.hpp"

namespace bw = batchwise;

namespace bw_fuzz {
namespace {

using net = bw::Sequential<bw::Input<4>, bw::Dense<3>, bw::ReLU, bw::Dense<2>>;
using model = bw::Model<net, bw::dynamic_batch, bw::cpu_blas>;

// A fresh model per input: state left behind by one input (a loaded position or slot) must not
// decide what the next one does, or a finding would not reproduce from its file alone.
model compiled_model() {
    model m{bw::seed{7}};
    m.compile(bw::Adam{}, bw::MeanSquaredError{});
    return m;
}

const xt::xtensor<float, 2>& inputs() {
    static const xt::xtensor<float, 2> x = {{0.f, 1.f, 2.f, 3.f}, {1.f, -1.f, 0.5f, 0.f},
                                             {2.f, 0.f, -2.f, 1.f}, {0.f, 0.f, 1.f, 1.f}};
    return x;
}

const xt::xtensor<float, 2>& targets() {
    static const xt::xtensor<float, 2> y = {{1.f, 0.f}, {0.f, 1.f}, {1.f, 1.f}, {0.f, 0.f}};
    return y;
}

const std::filesystem::path& scratch() {
    static const std::filesystem::path path = scratch_path("model", ".npz");
    return path;
}

}  // namespace

int load_weights_one(const std::uint8_t* data, std::size_t size) {
    write_file(scratch(), archive_input(data, size));
    model m = compiled_model();
    return run_one([&] {
        m.load_weights(scratch());
        // What was accepted must be usable: a loaded shape or count that disagrees with the
        // model would show here as an out-of-bounds access.
        (void)m.predict(inputs(), 2);
    });
}

int load_checkpoint_one(const std::uint8_t* data, std::size_t size) {
    write_file(scratch(), archive_input(data, size));
    model m = compiled_model();
    return run_one([&] {
        m.load_checkpoint(scratch());
        // Training on from the loaded position and optimizer slots: an accepted epoch, step or
        // slot that the model cannot continue from is a finding here, not in a user's fit().
        (void)m.fit(inputs(), targets(), {.epochs = 2, .batch_size = 2, .verbose = 0});
    });
}

std::vector<seed> model_seeds() {
    const std::filesystem::path path = scratch_path("model_seed", ".npz");
    std::vector<seed> seeds;
    model fresh = compiled_model();
    fresh.save_weights(path);
    seeds.push_back({"save_weights.npz", read_file(path)});
    fresh.save_checkpoint(path);
    seeds.push_back({"save_checkpoint_fresh.npz", read_file(path)});
    model trained = compiled_model();
    (void)trained.fit(inputs(), targets(), {.epochs = 1, .batch_size = 2, .verbose = 0});
    (void)trained.train_on_batch(inputs(), targets());
    trained.save_checkpoint(path);
    seeds.push_back({"save_checkpoint_trained.npz", read_file(path)});
    model sgd{bw::seed{3}};
    sgd.compile(bw::SGD{}, bw::MeanSquaredError{});
    sgd.save_checkpoint(path);
    seeds.push_back({"save_checkpoint_sgd.npz", read_file(path)});
    std::filesystem::remove(path);
    return archive_seeds(std::move(seeds));
}

}  // namespace bw_fuzz
