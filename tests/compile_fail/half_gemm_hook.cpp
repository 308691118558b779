// A layer that names the variable it would update inside its gradient GEMM but has no
// backward_and_update: one sentence, not a hook skipped in silence.
#include <batchwise/batchwise.hpp>
#include <string_view>
namespace bw = batchwise;
struct HalfHook : bw::ReLU {
    static constexpr std::string_view name = "HalfHook";
    template <class In, bw::ExecutionPolicy Exec>
    struct impl : bw::ReLU::impl<In, Exec> {
        static constexpr std::string_view variable_updated_in_gemm = "kernel";
    };
};
using Net = bw::Sequential<bw::Input<4>, bw::Dense<10>, HalfHook, bw::Dense<2>>;
int main() { bw::Model<Net> model; }
