import CLLVM

/// Marks pointer parameters (0-based) `noalias`, so loops over them vectorize.
func markNoAlias(_ fn: LLVMValueRef, parameters: [Int], context ctx: LLVMContextRef) {
    let kind = LLVMGetEnumAttributeKindForName("noalias", 7)
    for p in parameters { LLVMAddAttributeAtIndex(fn, UInt32(p + 1), LLVMCreateEnumAttribute(ctx, kind, 0)) }
}

/// Ends a counted loop at the builder's current block: increments `index` (a phi in `header`
/// that starts at 0 from `preheader`), branches back to `header` while it is below `bound`,
/// else to `exit`. Returns the incremented index.
@discardableResult
func closeCountedLoop(_ b: LLVMBuilderRef, index: LLVMValueRef?, bound: LLVMValueRef?, header: LLVMBasicBlockRef?,
                      preheader: LLVMBasicBlockRef?, exit: LLVMBasicBlockRef?) -> LLVMValueRef {
    let type = LLVMTypeOf(index)
    let next = LLVMBuildAdd(b, index, LLVMConstInt(type, 1, 0), "")!
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, next, bound, ""), header, exit)
    var values: [LLVMValueRef?] = [LLVMConstInt(type, 0, 0), next]
    var blocks: [LLVMBasicBlockRef?] = [preheader, LLVMGetInsertBlock(b)]
    LLVMAddIncoming(index, &values, &blocks, 2)
    return next
}
