// accumulate<K, double> on a policy that has no storage for doubles (no double_vector).
#include "../concept_only_policy.hpp"
namespace bw = batchwise;

using Net = bw::Sequential<bw::Input<4>, bw::Dense<2>>;
int main() { bw::Model<Net, bw::dynamic_batch, bw_test::concept_only, bw::accumulate<2, double>> model; }
