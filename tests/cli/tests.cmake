# End-to-end tests of the sparta binary (Python unittest, Debian's python3).
foreach(case ResumeTest GradAccumTest InitFromTest CrashTest BadInputTest CommandsTest TaskTest PrecisionTest)
  add_test(NAME cli_${case}
           COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_cli.py $<TARGET_FILE:sparta> -v ${case})
  set_tests_properties(cli_${case} PROPERTIES TIMEOUT 600)
endforeach()
# `sparta sweep` end to end (grid runs, records, table, plot, resume/force, bad grids).
add_test(NAME cli_SweepTest
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_sweep_cli.py $<TARGET_FILE:sparta> -v SweepTest)
set_tests_properties(cli_SweepTest PROPERTIES TIMEOUT 600)
# `sparta bench attention` end to end (records, --out files, --plot-from, bad input, bench_attention.py smoke run).
add_test(NAME cli_BenchAttentionTest
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_bench_cli.py $<TARGET_FILE:sparta> -v BenchAttentionTest)
set_tests_properties(cli_BenchAttentionTest PROPERTIES TIMEOUT 600)
# `sparta bench gemm --dtype` (every type reports a rate; unknown type: one-line error).
add_test(NAME cli_BenchGemmTest
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_bench_cli.py $<TARGET_FILE:sparta> -v BenchGemmTest)
set_tests_properties(cli_BenchGemmTest PROPERTIES TIMEOUT 600)
# bench/precision_quality.py end to end on a tiny config (table, overlaid plot, --reuse, bad input).
add_test(NAME cli_PrecisionQualityTest
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_bench_cli.py $<TARGET_FILE:sparta> -v PrecisionQualityTest)
set_tests_properties(cli_PrecisionQualityTest PROPERTIES TIMEOUT 600)
# Hostile checkpoint folders: nested JSON, huge headers, mismatched config, bad state numbers, short eval files.
add_test(NAME cli_HostileCheckpointTest
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_checkpoint_input_cli.py $<TARGET_FILE:sparta> -v
                 HostileCheckpointTest)
set_tests_properties(cli_HostileCheckpointTest PROPERTIES TIMEOUT 600)
# Never lose or mix a run: Ctrl-C/SIGTERM, run-folder lock, resume rules, --force, non-finite numbers.
foreach(case InterruptTest LockTest ResumeRulesTest StartOverTest NonFiniteTest)
  add_test(NAME cli_${case}
           COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_run_safety.py $<TARGET_FILE:sparta> -v ${case})
  set_tests_properties(cli_${case} PROPERTIES TIMEOUT 600)
endforeach()
# What sparta tells its user: flag checks, warnings, notes, counts, config output, sweep equivalence.
foreach(case FlagValuesTest GenerateTest DataMessagesTest ConfigOutputTest SweepMessagesTest)
  add_test(NAME cli_${case}
           COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_messages_cli.py $<TARGET_FILE:sparta> -v ${case})
  set_tests_properties(cli_${case} PROPERTIES TIMEOUT 600)
endforeach()
