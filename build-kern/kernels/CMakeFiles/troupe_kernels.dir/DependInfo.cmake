
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/kernels/cpu/gemm.cc" "kernels/CMakeFiles/troupe_kernels.dir/cpu/gemm.cc.o" "gcc" "kernels/CMakeFiles/troupe_kernels.dir/cpu/gemm.cc.o.d"
  "/work/main/kernels/cpu/ops.cc" "kernels/CMakeFiles/troupe_kernels.dir/cpu/ops.cc.o" "gcc" "kernels/CMakeFiles/troupe_kernels.dir/cpu/ops.cc.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
