# `pip install .` of the source tree into a fresh folder (the standard build isolation: scikit-build-core and pybind11
# come from PyPI), then the installed package imports from there and answers a search. The module is built portable
# (ALIGNER_PYTHON_NATIVE=OFF, the documented switch for a wheel that runs on other machines): the -march=native
# default compiled 50 s longer on a 2-core machine, and the AVX-512 compile of every header is the strict consumer's
# job (tests/test_package/strict.cpp: -O0 in the packaging test, -O3 in .ci/run). It is also built unoptimised
# (cmake.build-type=None, no -O flag: 47 s instead of 91 on a 2-core Zen 4, 44 s of CPU instead of 125): this test
# checks the packaging (pyproject, scikit-build-core, what lands where, that the module loads and answers), while
# every other Python test runs the optimised module of the build tree, so the README's test command stays within its
# 15 minutes. Usage: cmake -DPYTHON=... -DSOURCE_DIR=... -DWORK_DIR=... -P pip_install.cmake
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
execute_process(COMMAND ${PYTHON} -m pip install --no-deps --disable-pip-version-check -q --target ${WORK_DIR}/site
                        --config-settings=cmake.define.ALIGNER_PYTHON_NATIVE=OFF --config-settings=cmake.build-type=None
                        ${SOURCE_DIR}
                WORKING_DIRECTORY ${WORK_DIR} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pip install ${SOURCE_DIR} failed (${rc})")
endif()
file(WRITE ${WORK_DIR}/smoke.py [=[
import sys
site = sys.argv[1]
sys.path.insert(0, site)
import numpy as np
import aligner
assert aligner.__file__.startswith(site), aligner.__file__
assert aligner._aligner.__file__.startswith(site), aligner._aligner.__file__
rng = np.random.default_rng(0)
docs = [rng.standard_normal((n, 32)).astype(np.float32) for n in (5, 9, 3, 12)]
r = aligner.Retriever(32)
r.add(docs)
ids, scores = r.search(docs[2], top=2)
assert ids[0] == 2, ids
assert scores[0] == aligner.score(docs[2], docs[2])
print("installed", aligner.__version__, "from", site)
]=])
execute_process(COMMAND ${PYTHON} -I ${WORK_DIR}/smoke.py ${WORK_DIR}/site RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the installed package failed its smoke test (${rc})")
endif()
