# CUDA backend. Compiled whenever nvcc is present (CI compiles it on every run), for sm_80 and sm_90.
# The architecture list must be set before enable_language, which otherwise caches nvcc's own default
# (sm_52 before CUDA 13, sm_75 since). A -DCMAKE_CUDA_ARCHITECTURES=... on the command line still wins.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "52" OR CMAKE_CUDA_ARCHITECTURES STREQUAL "75")
  set(CMAKE_CUDA_ARCHITECTURES 80 90 CACHE STRING "CUDA architectures (lora.cpp needs bf16 tensor cores: sm_80+)" FORCE)
endif()
enable_language(CUDA)
# C++20 like the host code: the CUDA sources include core/ headers (using enum). CMake 3.25 does not know
# that nvcc 12+ accepts -std=c++20, so we teach it (newer CMake sets the same values itself).
if(CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.0 AND NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_COMPILE_FEATURES cuda_std_20)
  list(APPEND CMAKE_CUDA_COMPILE_FEATURES cuda_std_20)
endif()
set(CMAKE_CUDA_STANDARD 20)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
find_package(CUDAToolkit REQUIRED)
file(GLOB _cuda_src CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/cuda/*.cu ${CMAKE_SOURCE_DIR}/src/cuda/*.cpp)
add_library(lora_cuda STATIC ${_cuda_src})
target_include_directories(lora_cuda PUBLIC ${CMAKE_SOURCE_DIR}/src)
target_link_libraries(lora_cuda PUBLIC lora_ops CUDA::cudart CUDA::cublasLt)
target_compile_definitions(lora_cuda PUBLIC LORA_HAVE_CUDA=1)

# fmt 9's consteval format strings do not compile under nvcc's front end in C++20: .cu files hold
# kernels and launchers and include cuda/check.h (fmt-free), never core/error.h; host code that formats
# messages (device.cpp, gemm.cpp) is plain C++ compiled by the host compiler.
target_link_libraries(lora_cuda PRIVATE lora_warnings)
