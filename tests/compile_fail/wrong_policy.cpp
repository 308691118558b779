// A type that is not an execution policy in the execution-policy slot.
#include <batchwise/batchwise.hpp>
namespace bw = batchwise;
using Net = bw::Sequential<bw::Input<4>, bw::Dense<2>>;
struct not_a_policy {};
int main() { bw::Model<Net, bw::dynamic_batch, not_a_policy> model; }
