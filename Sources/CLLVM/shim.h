#include <llvm/Config/llvm-config.h>
#include <llvm-c/Core.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Analysis.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Error.h>

// Guard against LLVM 14 headers from /usr/include being picked up with libLLVM-19.
#if LLVM_VERSION_MAJOR != 19
#error "mdl needs the LLVM 19 headers (apt-get install llvm-19-dev); pass -I/usr/lib/llvm-19/include"
#endif
