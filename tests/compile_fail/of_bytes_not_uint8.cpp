// Dataset::of_bytes keeps features as bytes: an array of floats must go to the constructor.
#include <batchwise/batchwise.hpp>
int main() {
    xt::xtensor<float, 2> x = xt::zeros<float>({4, 2});
    xt::xtensor<int, 1> y = xt::zeros<int>({4});
    (void)batchwise::data::Dataset::of_bytes(x, y, 255.0f);
}
