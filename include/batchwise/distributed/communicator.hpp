// What data-parallel training needs of a transport between processes, as one concept, so that
// another engine (Gloo, UCC) is one more header: mpi.hpp and nccl.hpp are the two there are.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

namespace batchwise {

/// A group of processes that sum numbers together. Every collective either completes on every
/// process or ends on each with distributed_error (a process failed, or none came within the
/// timeout): never a wait without end.
/// - connect(): joins the group (at compile()); distributed_error when the transport is not up.
/// - rank(), size(): this process's place in the group, once connected.
/// - allreduce_sum(double*, n): a sum of host doubles on every process (loss and metric sums).
/// - allgather(span<const uint64_t>): every process's values, rank by rank (configuration checks).
/// - buffer<Exec>(n), allreduce_gradients<Exec>(buffer, n): a scratch buffer of n floats in the
///   execution policy's memory, and the in-place sum of it across processes (the step's one
///   all-reduce of gradients, statistics and counts).
/// - announce_failure(message): this process is about to throw; the others stop waiting and
///   throw distributed_error naming it.
template <class C>
concept Communicator = std::movable<C> && requires(C& c, const C& cc, double* d, std::size_t n,
                                                   std::span<const std::uint64_t> values, std::string_view what) {
    c.connect();
    { cc.connected() } -> std::convertible_to<bool>;
    { cc.rank() } -> std::convertible_to<int>;
    { cc.size() } -> std::convertible_to<int>;
    c.allreduce_sum(d, n);
    { c.allgather(values) } -> std::same_as<std::vector<std::uint64_t>>;
    c.announce_failure(what);
};

/// A Communicator that can sum gradients held in the memory of execution policy Exec.
template <class C, class Exec>
concept GradientCommunicator = Communicator<C> && requires(C& c, std::size_t n) {
    { c.template buffer<Exec>(n) } -> std::same_as<float*>;
    c.template allreduce_gradients<Exec>(static_cast<float*>(nullptr), n);
};

namespace detail {
/// FNV-1a over bytes: fingerprints of configurations and weights that processes compare.
struct fnv1a {
    std::uint64_t value = 0xcbf29ce484222325ull;
    void add(const void* p, std::size_t n) {
        const auto* b = static_cast<const unsigned char*>(p);
        for (std::size_t i = 0; i < n; ++i) value = (value ^ b[i]) * 0x100000001b3ull;
    }
    void add(std::string_view s) { add(s.data(), s.size()); }
    template <class T>
        requires std::is_trivially_copyable_v<T>
    void add_value(const T& v) {
        add(&v, sizeof v);
    }
};
}  // namespace detail

}  // namespace batchwise
