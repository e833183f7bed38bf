# Builds and runs a consumer project of aligner: against an install tree (find_package), with add_subdirectory, or
# through FetchContent from an archive of the repository. Invoked by ctest: cmake -DSOURCE_DIR=... -DWORK_DIR=... -DMODE=... -P run.cmake
set(work ${WORK_DIR}/${MODE})
file(REMOVE_RECURSE ${work})
file(MAKE_DIRECTORY ${work})
function(run_step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "step failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
endfunction()
if(MODE STREQUAL "find_package")
  run_step(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${work}/aligner-build -G ${GENERATOR}
           -DALIGNER_BUILD_TESTS=OFF -DALIGNER_BUILD_BENCH=OFF -DALIGNER_BUILD_EXAMPLES=OFF -DALIGNER_INSTALL=ON
           -DCMAKE_INSTALL_PREFIX=${work}/prefix)
  run_step(${CMAKE_COMMAND} --install ${work}/aligner-build)
  run_step(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/test_package -B ${work}/consumer -G ${GENERATOR}
           -DCMAKE_PREFIX_PATH=${work}/prefix -DALIGNER_CONSUME=find_package -DALIGNER_CONSUME_FAISS=${WITH_FAISS})
elseif(MODE STREQUAL "fetch_content")
  # The README's FetchContent snippet: an archive of the repository's committed files (git archive), fetched by URL.
  find_program(GIT git)
  if(NOT GIT OR NOT EXISTS ${SOURCE_DIR}/.git)
    message(STATUS "SKIP: fetch_content needs git and a clone of the repository (${SOURCE_DIR} is not one)")
    return()
  endif()
  run_step(${GIT} -C ${SOURCE_DIR} archive --format=tar.gz --prefix=aligner/ -o ${work}/aligner.tar.gz HEAD)
  run_step(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/test_package -B ${work}/consumer -G ${GENERATOR}
           -DALIGNER_CONSUME=fetch_content -DALIGNER_ARCHIVE=${work}/aligner.tar.gz -DALIGNER_CONSUME_FAISS=${WITH_FAISS})
else()
  run_step(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/test_package -B ${work}/consumer -G ${GENERATOR}
           -DALIGNER_CONSUME=add_subdirectory -DALIGNER_SOURCE_DIR=${SOURCE_DIR} -DALIGNER_CONSUME_FAISS=${WITH_FAISS})
endif()
run_step(${CMAKE_COMMAND} --build ${work}/consumer)
run_step(${work}/consumer/consumer)
if(WITH_FAISS)
  run_step(${work}/consumer/faiss_consumer)
endif()
if(MODE STREQUAL "add_subdirectory")
  run_step(${work}/consumer/separate_consumer)
  # Without the TU that defines ALIGNER_KERNELS_IMPLEMENTATION the kernels' instances are missing at link time.
  execute_process(COMMAND ${CMAKE_COMMAND} --build ${work}/consumer --target separate_without_kernels
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0 OR NOT "${out}${err}" MATCHES "aligned_row_sums")
    message(FATAL_ERROR "separate_without_kernels linked (rc ${rc}) or failed for another reason than the missing "
                        "kernel instances: ALIGNER_SEPARATE_KERNELS did not keep them out of the program's TUs\n${out}\n${err}")
  endif()
endif()
