# End-to-end tests of the sparta binary (Python unittest, Debian's python3).
foreach(case ResumeTest CrashTest BadInputTest CommandsTest TaskTest)
  add_test(NAME cli_${case}
           COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_cli.py $<TARGET_FILE:sparta> -v ${case})
  set_tests_properties(cli_${case} PROPERTIES TIMEOUT 600)
endforeach()
