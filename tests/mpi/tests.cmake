# The MPI process group in real MPI jobs (mpirun with 2 and 3 ranks), when
# the build has MPI. tests/mpi/test_mpi.py drives tests/mpi/collectives_check.cpp;
# tests/mpi/test_train_dp.py trains with `mpirun -np N sparta train`.
if(MPI_CXX_FOUND)
  add_executable(mpi_collectives_check ${CMAKE_CURRENT_LIST_DIR}/collectives_check.cpp)
  target_link_libraries(mpi_collectives_check PRIVATE sparta_lib)
  find_program(SPARTA_MPIEXEC NAMES mpirun mpiexec HINTS ${MPIEXEC_EXECUTABLE})
  foreach(case CollectivesTest ExchangeTest BucketTest StalledRankTest)
    add_test(NAME mpi_${case}
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_mpi.py ${SPARTA_MPIEXEC}
                     $<TARGET_FILE:mpi_collectives_check> -v ${case})
    set_tests_properties(mpi_${case} PROPERTIES TIMEOUT 300)
  endforeach()
  # `mpirun -np N sparta train`: tests/mpi/test_train_dp.py.
  foreach(case SameRunTest CompressTest ResumeTest BadLaunchTest FailureTest)
    add_test(NAME mpi_train_${case}
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_train_dp.py ${SPARTA_MPIEXEC}
                     $<TARGET_FILE:sparta> -v ${case})
    set_tests_properties(mpi_train_${case} PROPERTIES TIMEOUT 300)
  endforeach()
endif()
