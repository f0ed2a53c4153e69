// The artifact's descriptor as constant LLVM data. Each struct below mirrors
// one struct of runtime/include/optrt/artifact_abi.h field by field; LLVM
// lays out literal (non-packed) structs with the C ABI's natural alignment,
// so the bytes are what a C compiler would produce. tests/artifact loads
// artifacts through that header, which catches any drift.
#include "optdsl/Artifact.h"

#include "optdsl/Version.h"
#include "optrt/Layout.h"
#include "optrt/RuleKernels.h"
#include "optrt/artifact_abi.h"

#include "llvm/IR/Constants.h"
#include "llvm/IR/DerivedTypes.h"
#include "llvm/IR/Function.h"
#include "llvm/IR/GlobalVariable.h"
#include "llvm/IR/IRBuilder.h"

#include <stdexcept>

namespace optdsl {

namespace {

class DescriptorBuilder {
public:
  DescriptorBuilder(llvm::Module &module) : module_(module), context_(module.getContext()) {
    i32_ = llvm::Type::getInt32Ty(context_);
    f64_ = llvm::Type::getDoubleTy(context_);
    ptr_ = llvm::PointerType::get(context_, 0);
  }

  llvm::Constant *artifact(const KernelSignature &signature, const ArtifactInfo &info) {
    std::vector<llvm::Constant *> hypers, states, reductions, inputs, numUniforms, uniforms, layouts;
    for (const optrt::HyperInfo &hyper : signature.hypers)
      hypers.push_back(record({string(hyper.name), llvm::ConstantFP::get(f64_, hyper.defaultValue),
                               u32(hyper.fixed ? 1 : 0),
                               u32((hyper.range.lowerOpen ? OPTDSL_RANGE_LOWER_OPEN : 0) |
                                   (hyper.range.upperOpen ? OPTDSL_RANGE_UPPER_OPEN : 0)),
                               llvm::ConstantFP::get(f64_, hyper.range.lower),
                               llvm::ConstantFP::get(f64_, hyper.range.upper)}));
    for (const optrt::StateInfo &state : signature.states)
      states.push_back(record({string(state.name), u32(state.scalar ? 1 : 0),
                               u32(state.scalar ? 0u
                                                : static_cast<uint32_t>(state.span) |
                                                      (state.scratch ? OPTDSL_SPAN_SCRATCH : 0u))}));
    std::vector<llvm::Constant *> domains, axisReductions, columnSlots;
    for (int phase = 0; phase < signature.numPhases; ++phase) {
      domains.push_back(s32(signature.phaseDomains.empty() ? 0 : static_cast<int32_t>(signature.phaseDomains[phase])));
      columnSlots.push_back(s32(signature.columnSlots.empty() ? 0 : signature.columnSlots[phase]));
    }
    for (const optrt::AxisReductionInfo &reduction : signature.axisReductions)
      axisReductions.push_back(record({s32(reduction.phase), s32(reduction.state), u32(reduction.alongRows ? 1 : 0),
                                       u32(reduction.mean ? 1 : 0)}));
    for (const optrt::ReductionInfo &reduction : signature.reductions)
      reductions.push_back(record({u32(static_cast<uint32_t>(reduction.kind) |
                                      (reduction.groupWide ? static_cast<uint32_t>(OPTDSL_REDUCE_GROUP_WIDE) : 0u)),
                                  s32(reduction.phase)}));
    for (const optrt::InputInfo &input : signature.inputs)
      inputs.push_back(record({string(input.name), u32(input.optional ? 1 : 0), u32(0)}));
    for (int phase = 0; phase < signature.numPhases; ++phase) {
      numUniforms.push_back(s32(signature.numUniforms[phase]));
      uniforms.push_back(function(uniformsFunctionName(signature.rule, phase)));
    }
    for (const KernelSignature::Layout &layout : signature.layouts) {
      auto cuda = info.cuda.find(layout.name);
      layouts.push_back(layoutRecord(signature, layout, cuda == info.cuda.end() ? nullptr : cuda->second.get()));
    }
    std::vector<llvm::Constant *> variants;
    for (const CpuVariant &variant : info.variants) {
      std::vector<llvm::Constant *> tables;
      for (const KernelSignature::Layout &layout : signature.layouts)
        tables.push_back(kernelTable(signature, layout, variant.suffix));
      variants.push_back(record({string(variant.cpu), string(variant.features), array(tables, ptr_)}));
    }
    return record({u32(OPTDSL_ABI_VERSION), u32(hypers.size()), string(signature.rule),
                   string(versionString()), string(info.cpu), string(info.cpuFeatures),
                   array(hypers), u32(states.size()), u32(reductions.size()), array(states),
                   array(reductions), s32(signature.numPhases), u32(layouts.size()),
                   array(numUniforms, i32_), function(initFunctionName(signature.rule)),
                   array(uniforms, ptr_), function(scalarUpdateFunctionName(signature.rule)),
                   array(layouts), u32(variants.size()), u32(0), array(variants),
                   u32(inputs.size()), u32(signature.usesRandom ? 1 : 0), array(inputs),
                   array(domains, i32_), u32(axisReductions.size()), u32(0), array(axisReductions),
                   array(columnSlots, i32_)});
  }

  llvm::Type *i32() const { return i32_; }
  llvm::Type *ptr() const { return ptr_; }

  llvm::GlobalVariable *global(llvm::Constant *value, const std::string &name) {
    auto *variable = new llvm::GlobalVariable(module_, value->getType(), /*isConstant=*/true,
                                              llvm::GlobalValue::PrivateLinkage, value, name);
    variable->setUnnamedAddr(llvm::GlobalValue::UnnamedAddr::Global);
    return variable;
  }

private:
  llvm::Constant *layoutRecord(const KernelSignature &signature, const KernelSignature::Layout &layout,
                               const optrt::CudaKernels *cuda) {
    std::vector<llvm::Constant *> buffers;
    for (const optrt::BufferDesc &buffer : layout.buffers)
      buffers.push_back(record({u32(static_cast<uint32_t>(buffer.role)),
                                u32(static_cast<uint32_t>(buffer.dtype)), s32(buffer.state),
                                u32(buffer.blockElements)}));
    llvm::Constant *device = cuda ? global(cudaRecord(*cuda), "optdsl.cuda")
                                  : static_cast<llvm::Constant *>(llvm::ConstantPointerNull::get(ptr_));
    return record({string(layout.name), u32(buffers.size()), u32(0), array(buffers),
                   kernelTable(signature, layout, ""), device});
  }

  /// One kernel per phase of `layout`, of the CPU variant with `suffix`.
  llvm::Constant *kernelTable(const KernelSignature &signature, const KernelSignature::Layout &layout,
                              const std::string &suffix) {
    std::vector<llvm::Constant *> kernels;
    for (int phase = 0; phase < signature.numPhases; ++phase)
      kernels.push_back(function(kernelFunctionName(signature.rule, phase, layout.name) + suffix));
    return array(kernels, ptr_);
  }

  llvm::Constant *cudaRecord(const optrt::CudaKernels &cuda) {
    std::vector<llvm::Constant *> images, fixedNames, fixedValues;
    for (const optrt::CudaImage &image : cuda.images) {
      llvm::Constant *cubin = llvm::ConstantPointerNull::get(ptr_);
      if (!image.cubin.empty())
        cubin = global(llvm::ConstantDataArray::getRaw(image.cubin, image.cubin.size(),
                                                       llvm::Type::getInt8Ty(context_)),
                       "optdsl.cubin");
      images.push_back(record({string(image.arch), string(image.ptx), s32(image.ptxVersion), u32(0),
                               cubin, llvm::ConstantInt::get(llvm::Type::getInt64Ty(context_),
                                                             image.cubin.size())}));
    }
    for (const auto &[name, value] : cuda.fixedHypers) {
      fixedNames.push_back(string(name));
      fixedValues.push_back(llvm::ConstantFP::get(f64_, value));
    }
    return record({u32(images.size()), s32(cuda.blockSize), array(images),
                   strings(cuda.uniformsEntries), strings(cuda.elementEntries),
                   strings(cuda.finishEntries), string(cuda.scalarsEntry), string(cuda.advanceEntry),
                   string(cuda.gradStatsEntry), string(cuda.stepOptionsEntry),
                   s32(cuda.buffersPerTensor), s32(cuda.uniformStride), s32(cuda.partialStride),
                   u32(fixedNames.size()), array(fixedNames, ptr_), array(fixedValues, f64_)});
  }

  llvm::Constant *strings(const std::vector<std::string> &texts) {
    std::vector<llvm::Constant *> pointers;
    for (const std::string &text : texts)
      pointers.push_back(string(text));
    return array(pointers, ptr_);
  }

  llvm::Constant *u32(uint32_t value) { return llvm::ConstantInt::get(i32_, value); }
  llvm::Constant *s32(int32_t value) { return llvm::ConstantInt::getSigned(i32_, value); }

  llvm::Constant *record(const std::vector<llvm::Constant *> &fields) {
    return llvm::ConstantStruct::getAnon(context_, fields);
  }

  llvm::Constant *string(const std::string &text) {
    return global(llvm::ConstantDataArray::getString(context_, text), "optdsl.str");
  }

  /// A pointer to a constant array of the elements, or null when empty.
  /// `element` gives the type when there may be no element to take it from.
  llvm::Constant *array(const std::vector<llvm::Constant *> &elements, llvm::Type *element = nullptr) {
    if (elements.empty())
      return llvm::ConstantPointerNull::get(ptr_);
    llvm::ArrayType *type = llvm::ArrayType::get(element ? element : elements[0]->getType(), elements.size());
    return global(llvm::ConstantArray::get(type, elements), "optdsl.array");
  }

  llvm::Constant *function(const std::string &name) {
    llvm::Function *fn = module_.getFunction(name);
    if (!fn || fn->isDeclaration())
      throw std::logic_error("kernel artifact: the module has no function '" + name + "'");
    return fn;
  }

  llvm::Module &module_;
  llvm::LLVMContext &context_;
  llvm::Type *i32_, *f64_;
  llvm::PointerType *ptr_;
};

/// A defined external function returning `value`.
void defineExport(llvm::Module &module, const char *name, llvm::Type *type, llvm::Constant *value) {
  auto *fn = llvm::Function::Create(llvm::FunctionType::get(type, false),
                                    llvm::GlobalValue::ExternalLinkage, name, module);
  llvm::IRBuilder<> builder(llvm::BasicBlock::Create(module.getContext(), "entry", fn));
  builder.CreateRet(value);
}

} // namespace

void addArtifactDescriptor(llvm::Module &module, const KernelSignature &signature,
                           const ArtifactInfo &info) {
  // Only the ABI is exported: the kernels keep fixed names per rule, and two
  // artifacts of one rule must not interpose on each other.
  for (llvm::Function &fn : module)
    if (!fn.isDeclaration())
      fn.setVisibility(llvm::GlobalValue::HiddenVisibility);
  DescriptorBuilder builder(module);
  llvm::GlobalVariable *descriptor = builder.global(builder.artifact(signature, info), "optdsl.artifact");
  defineExport(module, OPTDSL_ABI_VERSION_SYMBOL, builder.i32(),
               llvm::ConstantInt::get(builder.i32(), OPTDSL_ABI_VERSION));
  defineExport(module, OPTDSL_ARTIFACT_SYMBOL, builder.ptr(), descriptor);
}

} // namespace optdsl
