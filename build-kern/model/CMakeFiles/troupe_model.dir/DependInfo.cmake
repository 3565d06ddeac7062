
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/model/ffn.cc" "model/CMakeFiles/troupe_model.dir/ffn.cc.o" "gcc" "model/CMakeFiles/troupe_model.dir/ffn.cc.o.d"
  "/work/main/model/mhc.cc" "model/CMakeFiles/troupe_model.dir/mhc.cc.o" "gcc" "model/CMakeFiles/troupe_model.dir/mhc.cc.o.d"
  "/work/main/model/mla.cc" "model/CMakeFiles/troupe_model.dir/mla.cc.o" "gcc" "model/CMakeFiles/troupe_model.dir/mla.cc.o.d"
  "/work/main/model/model.cc" "model/CMakeFiles/troupe_model.dir/model.cc.o" "gcc" "model/CMakeFiles/troupe_model.dir/model.cc.o.d"
  "/work/main/model/optim.cc" "model/CMakeFiles/troupe_model.dir/optim.cc.o" "gcc" "model/CMakeFiles/troupe_model.dir/optim.cc.o.d"
  "/work/main/model/params.cc" "model/CMakeFiles/troupe_model.dir/params.cc.o" "gcc" "model/CMakeFiles/troupe_model.dir/params.cc.o.d"
  "/work/main/model/trainer.cc" "model/CMakeFiles/troupe_model.dir/trainer.cc.o" "gcc" "model/CMakeFiles/troupe_model.dir/trainer.cc.o.d"
  "/work/main/model/weights_io.cc" "model/CMakeFiles/troupe_model.dir/weights_io.cc.o" "gcc" "model/CMakeFiles/troupe_model.dir/weights_io.cc.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  "/work/main/build-kern/kernels/CMakeFiles/troupe_kernels.dir/DependInfo.cmake"
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
