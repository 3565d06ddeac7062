
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/launch/cmd_dev.cc" "launch/CMakeFiles/troupe.dir/cmd_dev.cc.o" "gcc" "launch/CMakeFiles/troupe.dir/cmd_dev.cc.o.d"
  "/work/main/launch/cmd_eval.cc" "launch/CMakeFiles/troupe.dir/cmd_eval.cc.o" "gcc" "launch/CMakeFiles/troupe.dir/cmd_eval.cc.o.d"
  "/work/main/launch/cmd_export.cc" "launch/CMakeFiles/troupe.dir/cmd_export.cc.o" "gcc" "launch/CMakeFiles/troupe.dir/cmd_export.cc.o.d"
  "/work/main/launch/cmd_train.cc" "launch/CMakeFiles/troupe.dir/cmd_train.cc.o" "gcc" "launch/CMakeFiles/troupe.dir/cmd_train.cc.o.d"
  "/work/main/launch/main.cc" "launch/CMakeFiles/troupe.dir/main.cc.o" "gcc" "launch/CMakeFiles/troupe.dir/main.cc.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  "/work/main/build-kern/model/CMakeFiles/troupe_model.dir/DependInfo.cmake"
  "/work/main/build-kern/kernels/CMakeFiles/troupe_kernels.dir/DependInfo.cmake"
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
