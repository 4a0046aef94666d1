# SPDX-License-Identifier: Apache-2.0
# Compiler flags, sanitizers, and kiln_test(): how every test is registered.

function(kiln_setup_flags)
	set(warn -Wall -Wextra -Wshadow -Wno-unused-parameter -Wmissing-prototypes
		-Wstrict-prototypes -Wpointer-arith -Wformat=2 -Wvla -Wno-missing-field-initializers)
	if(CMAKE_C_COMPILER_ID MATCHES "Clang")
		# clang (the fuzz build) ignores gcc's optimize() attribute, flags the
		# cmsghdr union that glibc's CMSG_SPACE buffers need, and counts writes
		# to a volatile as "set but not used"; none of these is a defect.
		list(APPEND warn -Wno-unknown-attributes -Wno-gnu-variable-sized-type-not-at-end
			-Wno-unused-but-set-variable)
	endif()
	if(KILN_WERROR)
		list(APPEND warn -Werror)
	endif()
	add_compile_options(${warn} -fno-strict-aliasing -D_GNU_SOURCE -fstack-protector-strong)
	if(KILN_SANITIZE)
		add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
			-fno-sanitize-recover=all)
		add_link_options(-fsanitize=address,undefined)
	endif()
	if(KILN_FUZZ)
		# Coverage for libFuzzer in every library a fuzz target links; targets
		# that must stay uninstrumented (the static init, the probe) opt out
		# with -fno-sanitize=all, which drops this too.
		add_compile_options(-fsanitize=fuzzer-no-link)
	endif()
endfunction()

# Link the allocator the build selected (jemalloc in release, libc under sanitizers).
function(kiln_link_allocator target)
	if(KILN_JEMALLOC)
		target_link_libraries(${target} PRIVATE PkgConfig::JEMALLOC)
	endif()
endfunction()

# kiln_test(NAME name SOURCES a.c ... LIBS ... LABELS unit|privileged|integration|guest
#           [TIMEOUT s] [ARGS ...])
# Registers a test binary with ctest. Exit code 77 means "skipped" (and the test
# prints why): used only where the kernel truly lacks a feature.
function(kiln_test)
	cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS;ARGS;COMMAND" ${ARGN})
	if(NOT T_TIMEOUT)
		set(T_TIMEOUT 120)
	endif()
	if(T_SOURCES)
		add_executable(${T_NAME} ${T_SOURCES})
		target_link_libraries(${T_NAME} PRIVATE ${T_LIBS})
		target_include_directories(${T_NAME} PRIVATE ${CMAKE_SOURCE_DIR}/tests)
		add_test(NAME ${T_NAME} COMMAND ${T_NAME} ${T_ARGS})
	else()
		add_test(NAME ${T_NAME} COMMAND ${T_COMMAND} ${T_ARGS})
	endif()
	set_tests_properties(${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "${T_LABELS}"
		SKIP_RETURN_CODE 77)
endfunction()
