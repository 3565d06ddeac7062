
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/bench/bench_gemm.cc" "bench/CMakeFiles/bench_gemm.dir/bench_gemm.cc.o" "gcc" "bench/CMakeFiles/bench_gemm.dir/bench_gemm.cc.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  "/work/main/build-kern/model/CMakeFiles/troupe_model.dir/DependInfo.cmake"
  "/work/main/build-kern/kernels/CMakeFiles/troupe_kernels.dir/DependInfo.cmake"
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
