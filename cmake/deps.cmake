# Third-party dependencies, all from Debian packages (scripts/install-deps.sh installs them).
set(THREADS_PREFER_PTHREAD_FLAG ON)
find_package(Threads REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(fmt REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(CLI11 REQUIRED)
find_package(PkgConfig REQUIRED)

# OpenBLAS: only src/cpu/gemm.cpp includes cblas.h.
set(BLA_VENDOR OpenBLAS)
find_package(BLAS REQUIRED)
find_path(LORA_CBLAS_INCLUDE cblas.h PATHS /usr/include/x86_64-linux-gnu/openblas-pthread
          /usr/include/openblas /usr/include/x86_64-linux-gnu /usr/include REQUIRED)
add_library(lora_blas INTERFACE)
target_link_libraries(lora_blas INTERFACE ${BLAS_LIBRARIES})
target_include_directories(lora_blas INTERFACE ${LORA_CBLAS_INCLUDE})

# SentencePiece: only src/io/tokenizer_spm.cpp uses it.
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
add_library(lora_sentencepiece INTERFACE)
target_link_libraries(lora_sentencepiece INTERFACE PkgConfig::SENTENCEPIECE)

# PCRE2 (UTF + Unicode properties): the byte-level BPE pre-tokenizer regexes (GPT-2, Llama 3, Qwen2).
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
add_library(lora_pcre2 INTERFACE)
target_link_libraries(lora_pcre2 INTERFACE PkgConfig::PCRE2)
