"""Conan 2 recipe for batchwise, a header-only C++20 library.

    conan create . --profile:all conan/profiles/debian --no-remote   # offline, Debian's packages
    conan create . --profile:all default                             # dependencies from Conan Center

How consumers find the package and its dependencies
---------------------------------------------------
The package is what `cmake --install` puts in a prefix: the headers and batchwise's own CMake
package (share/cmake/batchwise: batchwiseConfig.cmake, its version file, the exported target
batchwise::batchwise, and BatchwiseDependencies.cmake). Conan's CMakeDeps is told not to write a
config file for batchwise (cmake_find_mode "none"); that folder is declared a build directory
instead, which CMakeToolchain puts on CMAKE_PREFIX_PATH. So `find_package(batchwise CONFIG)`
loads the same file through Conan as from an installed prefix, and that file finds the
dependencies with find_dependency(), by their usual CMake package names (xtensor, xtensor-blas,
OpenBLAS, ZLIB, Threads):

- dependencies from Conan Center: CMakeDeps writes xtensor-config.cmake, OpenBLASConfig.cmake,
  ... into the generators folder, which is on CMAKE_PREFIX_PATH, so those are what is found;
- dependencies given in the profile's [platform_requires] (conan/profiles/debian): Conan takes
  them as already installed and CMakeDeps writes nothing for them, so find_dependency() finds the
  system's own packages, from Debian: /usr/lib/x86_64-linux-gnu/cmake/xtensor,
  .../cmake/openblas (variables only; BatchwiseDependencies.cmake turns them into a target),
  CMake's FindZLIB. Nothing is downloaded, which is what lets `conan create` run offline.

One lookup path in both cases, and the same one as for a plain `cmake --install`, so the
package cannot work through Conan and fail installed, or the other way round.
"""
import os
import re

from conan import ConanFile
from conan.tools.build import check_min_cppstd
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout
from conan.tools.files import load

# 2.6: the oldest release tried with the profile ([platform_requires], the test_folder conf).
required_conan_version = ">=2.6"


class BatchwiseConan(ConanFile):
    name = "batchwise"
    description = "Header-only C++20 neural-network training in which the batch is a typed, first-class thing"
    topics = ("neural-networks", "deep-learning", "header-only", "xtensor", "blas")
    package_type = "header-library"
    # Settings are used to run CMake (configure and install); package_id() drops them, so one
    # package serves every configuration.
    settings = "os", "arch", "compiler", "build_type"
    exports_sources = "CMakeLists.txt", "cmake/*", "include/*"
    no_copy_source = True

    def set_version(self):
        # One version, in CMakeLists.txt's project() call.
        cmakelists = load(self, os.path.join(self.recipe_folder, "CMakeLists.txt"))
        self.version = re.search(r"project\(batchwise\s+VERSION\s+([0-9.]+)", cmakelists).group(1)

    def requirements(self):
        # Ranges that hold Debian 12's versions (xtensor 0.24.3, xtensor-blas 0.20.0,
        # OpenBLAS 0.3.21, zlib 1.2.13), the ones tested. xtensor 0.26 moved its headers, which
        # core/xtensor.hpp handles; the upper bounds leave out releases nobody has tried with
        # batchwise. Conan Center has all four under these names.
        self.requires("xtensor/[>=0.24.3 <0.27]")
        self.requires("xtensor-blas/[>=0.20.0 <0.23]")
        self.requires("openblas/[>=0.3.21 <0.4]")
        self.requires("zlib/[>=1.2.13 <2]")

    def validate(self):
        check_min_cppstd(self, 20)

    def layout(self):
        cmake_layout(self)

    def generate(self):
        toolchain = CMakeToolchain(self)
        toolchain.cache_variables["BATCHWISE_BUILD_TESTS"] = False
        toolchain.cache_variables["BATCHWISE_BUILD_EXAMPLES"] = False
        toolchain.cache_variables["BATCHWISE_BUILD_BENCHMARKS"] = False
        toolchain.cache_variables["BATCHWISE_INSTALL"] = True
        toolchain.user_presets_path = False
        toolchain.generate()
        CMakeDeps(self).generate()

    def build(self):
        # Nothing to compile; configuring checks that the dependencies are found, and writes
        # the package files that package() installs.
        cmake = CMake(self)
        cmake.configure()

    def package(self):
        cmake = CMake(self)
        cmake.install()

    def package_id(self):
        self.info.clear()

    def package_info(self):
        self.cpp_info.set_property("cmake_find_mode", "none")
        self.cpp_info.builddirs = [os.path.join("share", "cmake", "batchwise")]
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        # What batchwise::batchwise carries, for generators other than CMake's (pkg-config,
        # MSBuild, ...).
        self.cpp_info.defines = ["HAVE_CBLAS=1"]
        if self.settings.os in ("Linux", "FreeBSD"):
            self.cpp_info.system_libs = ["pthread"]
