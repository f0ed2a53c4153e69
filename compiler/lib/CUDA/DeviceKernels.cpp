// Builds the gpu.module of a rule: the host kernels' uniform and
// scalar-update functions (f64) become device functions, each phase's
// element code is emitted again for the GPU, and gpu.func kernels implement
// the device ABI of runtime/include/optrt/CudaKernels.h. Everything a step
// needs (the step number, hypers, scalar states, reductions) is read from
// device memory, so a step is a fixed sequence of launches with fixed
// arguments: it can be captured in a CUDA graph and replayed.
//
// Element kernels: a block per chunk (grid-stride over the chunk table), its
// threads stride over the chunk's elements, so a warp's accesses are
// contiguous. The element code is the backend-neutral one
// (codegen::emitElementBody): at width 4 with 16-byte accesses
// (ld.global.v4.f32) where every buffer of the tensor is 16-byte aligned,
// at width 1 for the chunk's unaligned head and tail, and for tensors whose
// caller-owned param or grad is not 16-byte aligned.
//
// Precision layouts (optrt/Layout.h): one gpu.module per layout, its buffers
// those of the layout's CPU kernels (codegen::LayoutPlan), converted to and
// from f32 with the backend-neutral arithmetic of Codegen/StorageArith.h, so
// the stored bits are the CPU kernels'. A layout with q8 states goes block by
// block instead (blockwiseBody): one q8 block of 256 elements per iteration,
// a thread per element, the new values' finite magnitudes combined into the
// block's absmax by warp shuffles and shared memory, then quantised; the map
// and the thresholds are copied once per thread block into shared memory.
//
// Reductions: each thread accumulates in f64 over its elements in order, the
// block combines the threads' values in a fixed tree in shared memory, and
// one partial per chunk lands in the partials table; finish[p] then combines
// a tensor's chunk partials the same way (threads over chunks, then the
// tree) and finishes mean and norm. Launch shape and block size are fixed,
// so the result is bitwise reproducible from run to run (though not equal to
// the CPU's, which sums in another order).
#include "optdsl/CUDAKernelGen.h"

#include "DeviceBuilder.h"
#include "StepKernels.h"

#include "optdsl/Codegen/ElementLoop.h"
#include "optdsl/Codegen/LayoutPlan.h"
#include "optdsl/Codegen/PhaseBody.h"
#include "optdsl/Codegen/StateSign.h"
#include "optdsl/Codegen/StorageArith.h"
#include "optrt/Storage.h"
#include "optdsl/Dialect/OptDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Builders.h"

#include <algorithm>
#include <limits>
#include <map>
#include <optional>
#include <set>

namespace optdsl {

using namespace mlir;

namespace {

using namespace cuda;

constexpr int64_t kVectorLanes = 4; // 16 bytes of f32
constexpr const char *kWarpMaxName = "optdsl_warp_max";
constexpr int64_t kWarps = kCudaBlockSize / 32;

/// The element type of a buffer of `dtype` in memory.
Type storageType(MLIRContext *context, optrt::Dtype dtype) {
  switch (dtype) {
  case optrt::Dtype::F32:
    return Float32Type::get(context);
  case optrt::Dtype::Q8Signed:
  case optrt::Dtype::Q8Unsigned:
    return IntegerType::get(context, 8);
  default:
    return IntegerType::get(context, 16);
  }
}

class DeviceKernelBuilder : public DeviceBuilder {
public:
  DeviceKernelBuilder(ModuleOp optModule, ModuleOp host, const KernelSignature &signature,
                      const std::string &layout, optrt::CudaKernels &facts)
      : DeviceBuilder(host.getContext(), host.getLoc()), optModule_(optModule), host_(host), sig_(signature),
        layoutText_(layout), facts_(facts) {}

  OwningOpRef<ModuleOp> run() {
    if (failed(findPhases()))
      return nullptr;
    computeFacts();
    OwningOpRef<ModuleOp> module = ModuleOp::create(loc_);
    (*module)->setAttr(gpu::GPUDialect::getContainerModuleAttrName(), b_.getUnitAttr());
    b_.setInsertionPointToEnd(module->getBody());
    auto gpuModule = b_.create<gpu::GPUModuleOp>(loc_, "optdsl_" + sig_.rule + "_cuda" + layoutSuffix(plan_.name));
    b_.setInsertionPointToStart(gpuModule.getBody());
    // The host module's uniform and scalar-update functions (f64, one call
    // per tensor) become device functions. Not init (the runtime fills state
    // buffers with memset from the host init's values), nor the CPU element
    // kernels (the element code is emitted again below, for the GPU).
    for (auto function : host_.getOps<func::FuncOp>()) {
      StringRef name = function.getSymName();
      bool uniforms = name.starts_with("optdsl_" + sig_.rule + "_uniforms");
      if (!uniforms && name != scalarUpdateFunctionName(sig_.rule))
        continue;
      cast<func::FuncOp>(b_.clone(*function)).setPrivate();
    }
    b_.create<LLVM::GlobalOp>(loc_, LLVM::LLVMArrayType::get(f64(), kCudaBlockSize),
                              /*isConstant=*/false, LLVM::Linkage::Internal, kSharedName,
                              Attribute(), /*alignment=*/8, kSharedAddressSpace);
    if (plan_.blockwise())
      buildQ8Tables();
    for (int phase = 0; phase < sig_.numPhases; ++phase) {
      buildUniformsKernel(phase);
      if (failed(buildElementKernel(phase)))
        return nullptr;
      if (hasFinish(phase))
        buildFinishKernel(phase);
    }
    if (numScalars_ > 0)
      buildScalarsKernel();
    buildAdvanceKernel();
    if (!facts_.gradStatsEntry.empty())
      buildStepKernels(b_, loc_, stepKernelSpec());
    return module;
  }

private:

  std::string entryName(const std::string &what) const {
    return "optdsl_" + sig_.rule + "_cuda_" + what + layoutSuffix(plan_.name);
  }

  void computeFacts() {
    for (const optrt::StateInfo &state : sig_.states)
      numScalars_ += state.scalar ? 1 : 0;
    numReductions_ = static_cast<int64_t>(sig_.reductions.size());
    int maxUniforms = 0;
    for (int n : sig_.numUniforms)
      maxUniforms = std::max(maxUniforms, n);
    int64_t maxPerPhase = 0;
    for (int phase = 0; phase < sig_.numPhases; ++phase)
      maxPerPhase = std::max(maxPerPhase, reductionEnd(phase) - reductionBegin(phase));
    facts_.rule = sig_.rule;
    facts_.layout = plan_.name;
    facts_.fixedHypers.clear();
    for (const optrt::HyperInfo &hyper : sig_.hypers)
      if (hyper.fixed)
        facts_.fixedHypers.emplace_back(hyper.name, hyper.defaultValue);
    facts_.blockSize = kCudaBlockSize;
    facts_.buffersPerTensor = static_cast<int>(plan_.buffers.size());
    // The per-tensor key of stochastic rounding and random() goes in the
    // slot after the rule's uniforms, as on the CPU.
    facts_.uniformStride = std::max(1, maxUniforms + (plan_.stochastic || sig_.usesRandom ? 1 : 0));
    // A rule with column sums: one more slot, the pointer to the chunk's
    // column partials (the last slot of its row, CudaKernels.h).
    bool columns = false;
    for (int phase = 0; phase < sig_.numPhases; ++phase)
      columns |= !columnSums(phase).empty();
    facts_.partialStride = static_cast<int>(std::max<int64_t>(1, maxPerPhase + (columns ? 1 : 0)));
    facts_.uniformsEntries.clear();
    facts_.elementEntries.clear();
    facts_.finishEntries.clear();
    for (int phase = 0; phase < sig_.numPhases; ++phase) {
      std::string p = std::to_string(phase);
      facts_.uniformsEntries.push_back(entryName("uniforms" + p));
      facts_.elementEntries.push_back(entryName("element" + p));
      facts_.finishEntries.push_back(hasFinish(phase) ? entryName("finish" + p) : std::string());
    }
    facts_.scalarsEntry = numScalars_ > 0 ? entryName("scalars") : std::string();
    facts_.advanceEntry = entryName("advance");
    bool stepHypers = hyperIndex(optrt::kGradScaleHyper) >= 0 && hyperIndex(optrt::kGradClipHyper) >= 0;
    facts_.gradStatsEntry = stepHypers ? entryName("gradstats") : std::string();
    facts_.stepOptionsEntry = stepHypers ? entryName("stepoptions") : std::string();
  }

  int64_t hyperIndex(std::string_view name) const {
    for (size_t h = 0; h < sig_.hypers.size(); ++h)
      if (sig_.hypers[h].name == name)
        return static_cast<int64_t>(h);
    return -1;
  }

  StepKernelSpec stepKernelSpec() const {
    StepKernelSpec spec;
    spec.gradStatsEntry = facts_.gradStatsEntry;
    spec.stepOptionsEntry = facts_.stepOptionsEntry;
    spec.buffersPerTensor = facts_.buffersPerTensor;
    spec.gradBuffer = plan_.storage[codegen::BufferLayout::kGrad];
    spec.gradDtype = plan_.dtype[codegen::BufferLayout::kGrad];
    spec.numHypers = static_cast<int64_t>(sig_.hypers.size());
    spec.gradScaleHyper = hyperIndex(optrt::kGradScaleHyper);
    spec.gradClipHyper = hyperIndex(optrt::kGradClipHyper);
    return spec;
  }

  LogicalResult findPhases() {
    auto rules = optModule_.getOps<opt::RuleOp>();
    if (rules.empty())
      return optModule_.emitError("expected an opt.rule");
    opt::RuleOp rule = *rules.begin();
    buffers_.emplace(rule);
    optrt::Layout layout = optrt::Layout::parse(layoutText_);
    plan_ = codegen::planLayout(layout, sig_.states, codegen::provedNonNegative(rule), *buffers_);
    for (opt::UpdateOp update : rule.getBody().front().getOps<opt::UpdateOp>())
      for (opt::PhaseOp phase : update.getBody().front().getOps<opt::PhaseOp>())
        phases_.push_back(phase);
    if (static_cast<int>(phases_.size()) != sig_.numPhases)
      return rule.emitError("the opt module has ") << phases_.size() << " phases, the host kernels "
                                                   << sig_.numPhases << "; run opt-kernel-prep first";
    return success();
  }

  // Reductions of phase p are [reductionBegin(p), reductionEnd(p)) (grouped
  // by phase in the signature).
  int64_t reductionBegin(int phase) const {
    int64_t n = 0;
    for (const optrt::ReductionInfo &r : sig_.reductions)
      n += r.phase < phase;
    return n;
  }
  int64_t reductionEnd(int phase) const { return reductionBegin(phase + 1); }

  optrt::PhaseDomain domain(int phase) const {
    return sig_.phaseDomains.empty() ? optrt::PhaseDomain::Elements : sig_.phaseDomains[phase];
  }
  /// The accumulations of a pass over the elements that sum columns (each
  /// chunk's partial sums, combined by finish[p]), in the order of their
  /// slots in the column partials; a row's sums the element kernel finishes.
  SmallVector<opt::AccumulateOp> columnSums(int phase) {
    SmallVector<opt::AccumulateOp> sums;
    if (domain(phase) != optrt::PhaseDomain::Elements)
      return sums;
    for (opt::AccumulateOp accumulation : codegen::phaseAccumulations(phases_[phase]))
      if (!accumulation.getKind().starts_with("row_"))
        sums.push_back(accumulation);
    return sums;
  }
  /// finish[p]: the phase reduces over tensors, or sums columns.
  bool hasFinish(int phase) { return reductionEnd(phase) > reductionBegin(phase) || !columnSums(phase).empty(); }

  Value divide(Value a, Value c) { return b_.create<arith::DivSIOp>(loc_, a, c); }
  Value subtract(Value a, Value c) { return b_.create<arith::SubIOp>(loc_, a, c); }

  /// {hypers of the tensor's group, its group's step} for per-tensor
  /// kernels: the group's counter is the f64 at kGroupCounters + group of
  /// the counter segment (CudaKernels.h), so a group added later starts at
  /// step 1, as on the CPU.
  std::pair<Value, Value> hypersAndStep(Value tensors, Value hypers, Value counter, Value t) {
    Value group = load(i64(), gep(tensors, mul(t, constI64(kTensorRecord)), i64()));
    Value groupHypers = gep(hypers, mul(group, constI64(static_cast<int64_t>(sig_.hypers.size()))), f64());
    Value steps = load(f64(), gep(counter, add(group, constI64(kGroupCounters)), f64()));
    return {groupHypers, b_.create<arith::AddFOp>(loc_, steps, constF64(1.0))};
  }

  // --- kernels --------------------------------------------------------------
  void buildUniformsKernel(int phase) {
    OpBuilder::InsertionGuard guard(b_);
    auto kernel = startKernel(facts_.uniformsEntries[phase],
                              {i64(), ptr(), ptr(), ptr(), ptr(), ptr(), ptr()});
    Value numTensors = kernel.getArgument(0), tensors = kernel.getArgument(1),
          hypers = kernel.getArgument(2), counter = kernel.getArgument(3),
          scalars = kernel.getArgument(4), reductions = kernel.getArgument(5),
          uniforms = kernel.getArgument(6);
    unlessStepSkipped(counter);
    Value t = globalThread();
    ifThen(b_.create<arith::CmpIOp>(loc_, arith::CmpIPredicate::slt, t, numTensors), [&] {
      auto [groupHypers, step] = hypersAndStep(tensors, hypers, counter, t);
      b_.create<func::CallOp>(
          loc_, uniformsFunctionName(sig_.rule, phase), TypeRange{},
          ValueRange{groupHypers, step, gep(scalars, mul(t, constI64(numScalars_)), f64()),
                     groupedReductions(numTensors, tensors, reductions, t),
                     gep(uniforms, mul(t, constI64(facts_.uniformStride)), f32())});
      if (plan_.stochastic || sig_.usesRandom) {
        // optrt::stochasticBits(seed, step, t), the CPU runtime's per-tensor
        // key, here because the step lives on the device. The seed is the
        // u32 after the step counter.
        Value seed = load(b_.getI32Type(), gep(counter, 2, b_.getI32Type()));
        // The optimizer's step, not the group's (as the CPU runtime: a
        // tensor's bits never repeat).
        Value optimizerStep = b_.create<arith::AddFOp>(loc_, load(f64(), counter), constF64(1.0));
        Value stepIndex = b_.create<arith::FPToUIOp>(loc_, i64(), optimizerStep);
        Value key = codegen::stochasticKeyBits(b_, loc_, seed, stepIndex, t);
        Value slot = add(mul(t, constI64(facts_.uniformStride)), constI64(sig_.numUniforms[phase]));
        store(key, gep(uniforms, slot, b_.getI32Type()));
      }
    });
  }

  // --- element access ---------------------------------------------------------
  /// `width` elements of the layout's buffer `buffer` at `index`, raw (f32,
  /// i16 patterns, i8 codes), with 16-byte accesses of f32 at width 4.
  Value loadRaw(OpBuilder &builder, Location loc, int buffer, Value index, int64_t width, bool invariant) {
    Type element = storageType(builder.getContext(), plan_.buffers[buffer].dtype);
    Value base = bufferBase_.at(buffer);
    Value address = builder.create<LLVM::GEPOp>(loc, base.getType(), element, base, ValueRange{index});
    unsigned alignment = static_cast<unsigned>(width * element.getIntOrFloatBitWidth() / 8);
    auto load = builder.create<LLVM::LoadOp>(loc, codegen::lanesOf(element, width), address, alignment);
    // No kernel writes the gradient: the read-only data path may serve it.
    if (invariant)
      load.setInvariant(true);
    return load;
  }
  void storeRaw(OpBuilder &builder, Location loc, int buffer, Value index, Value value) {
    Type element = storageType(builder.getContext(), plan_.buffers[buffer].dtype);
    Value base = bufferBase_.at(buffer);
    Value address = builder.create<LLVM::GEPOp>(loc, base.getType(), element, base, ValueRange{index});
    unsigned alignment = static_cast<unsigned>(codegen::widthOf(value) * element.getIntOrFloatBitWidth() / 8);
    builder.create<LLVM::StoreOp>(loc, value, address, alignment);
  }

  /// Reads and writes of the element code in the layout's storage: buffer
  /// bases in the global address space (so PTX uses ld.global/st.global),
  /// conversions from Codegen/StorageArith.h (f16 NaNs decoded and encoded
  /// in integer arithmetic: PTX's cvt does not promise to keep a payload),
  /// uniform slots loaded once per chunk. A q8 state reads its block's codes
  /// and absmax and writes its new value to a register (q8Value_), quantised
  /// when the block is done.
  codegen::ElementAccess access(Value index, int64_t width) {
    codegen::ElementAccess access;
    access.load = [=, this](OpBuilder &builder, Location loc, int buffer) -> Value {
      if (StringRef axis = buffers_->axis(buffer); !axis.empty())
        return builder.create<LLVM::LoadOp>(loc, f32(), axisAddress(builder, loc, buffer, axis), 4);
      if (buffer == codegen::BufferLayout::kParam && plan_.master >= 0) {
        Value master = loadRaw(builder, loc, plan_.master, index, width, false);
        if (!plan_.remainderMaster())
          return master;
        return codegen::joinMaster(builder, loc, loadRaw(builder, loc, plan_.storage[buffer], index, width, false),
                                   master);
      }
      optrt::Dtype dtype = plan_.dtype[buffer];
      Value raw = loadRaw(builder, loc, plan_.storage[buffer], index, width, buffer == codegen::BufferLayout::kGrad);
      switch (dtype) {
      case optrt::Dtype::F32:
        return raw;
      case optrt::Dtype::BF16:
        return codegen::widenBf16(builder, loc, raw);
      case optrt::Dtype::F16:
        return codegen::widenF16(builder, loc, raw, /*exactNan=*/true);
      default: {
        // q8 (width 1): map[code] * absmax, as optrt::dequantizeBlockwise.
        Value code = builder.create<arith::ExtUIOp>(loc, builder.getI32Type(), raw);
        Value entry = sharedTableLoad(builder, loc, dtype == optrt::Dtype::Q8Signed, false, code);
        return builder.create<arith::MulFOp>(loc, entry, blockAbsmax_.at(buffer));
      }
      }
    };
    access.store = [=, this](OpBuilder &builder, Location loc, int buffer, Value value) {
      if (StringRef axis = buffers_->axis(buffer); !axis.empty()) {
        // Only the passes over rows, columns or matrices write these: one
        // thread per row, column or matrix.
        builder.create<LLVM::StoreOp>(loc, value, axisAddress(builder, loc, buffer, axis), 4);
        return;
      }
      if (buffer == codegen::BufferLayout::kParam && plan_.master >= 0) {
        if (plan_.remainderMaster()) {
          auto [param, remainder] = codegen::splitMaster(builder, loc, value);
          storeRaw(builder, loc, plan_.storage[buffer], index, param);
          storeRaw(builder, loc, plan_.master, index, remainder);
          return;
        }
        storeRaw(builder, loc, plan_.master, index, value);
      }
      optrt::Dtype dtype = plan_.dtype[buffer];
      int storage = plan_.storage[buffer];
      if (codegen::isQ8(dtype)) {
        builder.create<LLVM::StoreOp>(loc, value, q8Value_.at(buffer), 4);
        return;
      }
      Value random;
      if (plan_.stochastic && dtype != optrt::Dtype::F32) {
        Value salt = builder.create<arith::ConstantOp>(loc, builder.getI32IntegerAttr(codegen::stochasticSalt(storage)));
        Value key = builder.create<arith::XOrIOp>(loc, stochasticKey(loc), salt);
        random = codegen::stochasticBits(builder, loc, key, index, width);
      }
      if (dtype == optrt::Dtype::BF16)
        value = codegen::narrowBf16(builder, loc, value, random);
      else if (dtype == optrt::Dtype::F16)
        value = codegen::narrowF16(builder, loc, value, random, /*exactNan=*/true);
      storeRaw(builder, loc, storage, index, value);
    };
    access.uniform = [this](OpBuilder &, Location loc, int slot, Type type) {
      return chunkUniform(slot, type, loc);
    };
    access.random = [=, this](OpBuilder &builder, Location loc, int64_t stream) {
      return codegen::randomUniform(builder, loc, stochasticKey(loc), stream, index, width);
    };
    return access;
  }

  /// Where a matrix rule's element code is: the tensor's row (over all its
  /// matrices), column (matrix * cols + column) and matrix, for the values
  /// of states and reductions spanning them.
  struct MatrixPosition {
    Value row, column, matrix;
  };
  Value axisIndex(StringRef axis) const {
    return axis == "rows" ? position_.row : axis == "cols" ? position_.column : position_.matrix;
  }
  /// The f32 of state buffer `buffer` (spanning `axis`) at the current position.
  Value axisAddress(OpBuilder &builder, Location loc, int buffer, StringRef axis) {
    Value base = bufferBase_.at(plan_.storage[buffer]);
    return builder.create<LLVM::GEPOp>(loc, base.getType(), f32(), base, ValueRange{axisIndex(axis)});
  }

  Value chunkUniform(int slot, Type type, Location loc) {
    auto it = uniformLoads_.find(slot);
    if (it != uniformLoads_.end())
      return it->second;
    OpBuilder::InsertionGuard guard(b_);
    b_.setInsertionPoint(prologueEnd_);
    auto value = b_.create<LLVM::LoadOp>(loc, f32(), gep(tensorUniforms_, slot, f32()), 4);
    // Written by the uniforms kernel before this one starts: read-only here.
    value.setInvariant(true);
    Value result = codegen::uniformAsType(b_, loc, value, type);
    uniformLoads_[slot] = result;
    return result;
  }

  /// The tensor's key of stochastic rounding and random() (the u32 in the
  /// slot after the rule's uniforms), loaded once per chunk.
  Value stochasticKey(Location loc) {
    if (stochasticKey_)
      return stochasticKey_;
    OpBuilder::InsertionGuard guard(b_);
    b_.setInsertionPoint(prologueEnd_);
    auto key = b_.create<LLVM::LoadOp>(loc, b_.getI32Type(),
                                       gep(tensorUniforms_, sig_.numUniforms[currentPhase_], b_.getI32Type()), 4);
    key.setInvariant(true);
    stochasticKey_ = key;
    return stochasticKey_;
  }

  // --- q8 tables and block maximum ------------------------------------------------
  static std::string tableName(bool isSigned, bool thresholds, bool shared) {
    return std::string("optdsl_q8_") + (isSigned ? "signed" : "unsigned") + (thresholds ? "_thresholds" : "_map") +
           (shared ? "_shared" : "");
  }
  std::set<bool> q8Signs() const {
    std::set<bool> signs;
    for (const auto &[buffer, absmax] : plan_.absmax)
      signs.insert(plan_.dtype[buffer] == optrt::Dtype::Q8Signed);
    return signs;
  }

  /// The maps and thresholds the layout uses (256 f32 each, thresholds
  /// padded with +Inf), as constant global data and as the shared-memory
  /// copies the element kernels look them up in (divergent indices: the
  /// constant cache would serialise them), plus the warps' maxima.
  void buildQ8Tables() {
    auto shared = static_cast<unsigned>(kSharedAddressSpace);
    for (bool isSigned : q8Signs())
      for (bool thresholds : {false, true}) {
        const optrt::Q8Map &map = optrt::q8Map(isSigned);
        std::vector<float> data = thresholds ? std::vector<float>(map.thresholds().begin(), map.thresholds().end())
                                             : std::vector<float>(map.values().begin(), map.values().end());
        data.resize(256, std::numeric_limits<float>::infinity());
        auto type = LLVM::LLVMArrayType::get(f32(), 256);
        auto tensor = RankedTensorType::get({256}, f32());
        b_.create<LLVM::GlobalOp>(loc_, type, /*isConstant=*/true, LLVM::Linkage::Internal,
                                  tableName(isSigned, thresholds, false),
                                  DenseElementsAttr::get(tensor, llvm::ArrayRef<float>(data)), 16, kGlobalAddressSpace);
        b_.create<LLVM::GlobalOp>(loc_, type, /*isConstant=*/false, LLVM::Linkage::Internal,
                                  tableName(isSigned, thresholds, true), Attribute(), 16, shared);
      }
    b_.create<LLVM::GlobalOp>(loc_, LLVM::LLVMArrayType::get(f32(), kWarps), /*isConstant=*/false,
                              LLVM::Linkage::Internal, kWarpMaxName, Attribute(), 16, shared);
  }

  /// Every thread copies entry tid of each table into shared memory.
  void copyQ8Tables(Value tid) {
    for (bool isSigned : q8Signs())
      for (bool thresholds : {false, true}) {
        Value from = b_.create<LLVM::AddressOfOp>(loc_, LLVM::LLVMPointerType::get(b_.getContext(), kGlobalAddressSpace),
                                                  tableName(isSigned, thresholds, false));
        Value to = b_.create<LLVM::AddressOfOp>(loc_, LLVM::LLVMPointerType::get(b_.getContext(), kSharedAddressSpace),
                                                tableName(isSigned, thresholds, true));
        Value value = load(f32(), b_.create<LLVM::GEPOp>(loc_, from.getType(), f32(), from, ValueRange{tid}));
        store(value, b_.create<LLVM::GEPOp>(loc_, to.getType(), f32(), to, ValueRange{tid}));
      }
    b_.create<gpu::BarrierOp>(loc_);
  }

  Value sharedTableLoad(OpBuilder &builder, Location loc, bool isSigned, bool thresholds, Value index) {
    Value table = builder.create<LLVM::AddressOfOp>(
        loc, LLVM::LLVMPointerType::get(builder.getContext(), kSharedAddressSpace), tableName(isSigned, thresholds, true));
    Value address = builder.create<LLVM::GEPOp>(loc, table.getType(), f32(), table, ValueRange{index});
    return builder.create<LLVM::LoadOp>(loc, f32(), address, 4);
  }

  /// The maximum of every thread's `value` (finite magnitudes: no NaN), on
  /// every thread: butterfly shuffles within each warp, then the warps'
  /// maxima through shared memory. All threads of the block must reach it.
  Value blockMax(Value value, Value tid) {
    for (int32_t offset = 16; offset >= 1; offset /= 2) {
      auto shuffle = b_.create<gpu::ShuffleOp>(loc_, value, offset, 32, gpu::ShuffleMode::XOR);
      value = b_.create<arith::MaxNumFOp>(loc_, value, shuffle.getShuffleResult());
    }
    auto sharedPtr = LLVM::LLVMPointerType::get(b_.getContext(), kSharedAddressSpace);
    Value warpMax = b_.create<LLVM::AddressOfOp>(loc_, sharedPtr, kWarpMaxName);
    Value lane = b_.create<arith::AndIOp>(loc_, tid, constI64(31));
    Value warp = b_.create<arith::ShRUIOp>(loc_, tid, constI64(5));
    ifThen(b_.create<arith::CmpIOp>(loc_, arith::CmpIPredicate::eq, lane, constI64(0)), [&] {
      store(value, b_.create<LLVM::GEPOp>(loc_, sharedPtr, f32(), warpMax, ValueRange{warp}));
    });
    b_.create<gpu::BarrierOp>(loc_);
    Value total = load(f32(), warpMax);
    for (int64_t w = 1; w < kWarps; ++w)
      total = b_.create<arith::MaxNumFOp>(
          loc_, total, load(f32(), b_.create<LLVM::GEPOp>(loc_, sharedPtr, f32(), warpMax, ValueRange{constI64(w)})));
    // The next block maximum overwrites the warps' maxima.
    b_.create<gpu::BarrierOp>(loc_);
    return total;
  }

  // --- element kernels ------------------------------------------------------------
  /// for i in [lower, upper) step `stride`: the element code at `width`
  /// lanes at i; returns the reduction accumulators.
  FailureOr<std::vector<Value>> elementLoop(int phase, Value lower, Value upper, int64_t stride, int64_t width,
                                            const std::vector<optrt::ReductionKind> &kinds,
                                            std::vector<Value> initial) {
    return codegen::emitElementLoop(b_, loc_, phases_[phase], *buffers_, lower, upper, constI64(stride), width,
                                    kinds, initial, [&](Value index) { return access(index, width); });
  }

  LogicalResult buildElementKernel(int phase) {
    OpBuilder::InsertionGuard guard(b_);
    auto kernel = startKernel(facts_.elementEntries[phase], {ptr(), i64(), ptr(), ptr(), ptr(), ptr()});
    Value chunks = kernel.getArgument(0), numChunks = kernel.getArgument(1),
          buffers = kernel.getArgument(2), uniforms = kernel.getArgument(3),
          partials = kernel.getArgument(4), counter = kernel.getArgument(5);
    unlessStepSkipped(counter);
    currentPhase_ = phase;
    std::vector<optrt::ReductionKind> kinds = codegen::phaseReductionKinds(phases_[phase]);
    int64_t count = static_cast<int64_t>(kinds.size());
    Value tid = threadId();
    if (plan_.blockwise()) {
      copyQ8Tables(tid);
      // One register per q8 state for its new value (an alloca that SROA
      // promotes), outside every loop.
      q8Value_.clear();
      for (const auto &[buffer, absmax] : plan_.absmax)
        q8Value_[buffer] = entryAlloca(f32(), 1);
    }
    auto [c, tensor, begin, end, table] = chunkLoop(chunks, numChunks, buffers, facts_.buffersPerTensor);
    auto globalPtr = LLVM::LLVMPointerType::get(b_.getContext(), kGlobalAddressSpace);
    bufferBase_.clear();
    uniformLoads_.clear();
    stochasticKey_ = Value();
    Value misalignment = constI64(0);
    for (int buffer = 0; buffer < facts_.buffersPerTensor; ++buffer) {
      auto base = b_.create<LLVM::LoadOp>(loc_, ptr(), gep(table, buffer, ptr()), 8);
      base.setInvariant(true);
      Value bits = b_.create<LLVM::PtrToIntOp>(loc_, i64(), base);
      misalignment = b_.create<arith::OrIOp>(loc_, misalignment, bits);
      bufferBase_[buffer] = b_.create<LLVM::AddrSpaceCastOp>(loc_, globalPtr, base);
    }
    tensorUniforms_ = gep(uniforms, mul(tensor, constI64(facts_.uniformStride)), f32());
    // Uniform loads go before this marker, ahead of the element loops.
    prologueEnd_ = constI64(kVectorLanes).getDefiningOp();

    FailureOr<std::vector<Value>> totals;
    if (buffers_->matrixShaped())
      totals = domain(phase) == optrt::PhaseDomain::Elements ? matrixBody(phase, kinds, c, begin, end, tid, partials)
                                                             : axisBody(phase, kinds, begin, tid);
    else if (plan_.blockwise())
      totals = blockwiseBody(phase, kinds, begin, end, tid);
    else
      totals = stridedBody(phase, kinds, begin, end, tid, misalignment);
    if (failed(totals))
      return failure();
    for (int64_t r = 0; r < count; ++r)
      blockReduce(kinds[r], (*totals)[r], tid, [&](Value total) {
        store(total, gep(partials, add(mul(c, constI64(facts_.partialStride)), constI64(r)), f64()));
      });
    return success();
  }

  /// &base[index] in base's address space.
  Value at(Value base, Value index, Type element) {
    return b_.create<LLVM::GEPOp>(loc_, base.getType(), element, base, ValueRange{index});
  }
  Value toGlobal(Value pointer) {
    return b_.create<LLVM::AddrSpaceCastOp>(
        loc_, LLVM::LLVMPointerType::get(b_.getContext(), kGlobalAddressSpace), pointer);
  }
  /// The pointer to chunk c's column partials: the last slot of its row of
  /// the partials table (the runtime writes it when the chunk is made).
  Value columnPartialsOf(Value partials, Value c) {
    Value slot = add(mul(c, constI64(facts_.partialStride)), constI64(facts_.partialStride - 1));
    return toGlobal(load(ptr(), gep(partials, slot, f64())));
  }
  /// The matrices chunk [begin, end) of a tensor touches: the first, and the
  /// floats of one region of its column partials (those matrices x cols).
  std::pair<Value, Value> columnRegion(Value begin, Value end, Value rows, Value cols) {
    Value firstMatrix = divide(divide(begin, cols), rows);
    Value lastMatrix = divide(subtract(divide(end, cols), constI64(1)), rows);
    return {firstMatrix, mul(add(subtract(lastMatrix, firstMatrix), constI64(1)), cols)};
  }
  Value toF64(Value v) { return v.getType().isF64() ? v : b_.create<arith::ExtFOp>(loc_, f64(), v).getResult(); }

  /// A rule that reads tensors as matrices, a pass over the elements: the
  /// chunk's whole rows one after the other, the block's threads striding
  /// over each row's columns (contiguous, so a warp's accesses coalesce).
  /// A row's sums: each thread's in f64, then the block's tree, stored by
  /// thread 0 when the row is done. A column's: thread j owns columns j,
  /// j + 256, ... of every row, so it adds (f32) into the chunk's column
  /// partials alone; finish[p] combines the chunks in order. Values the same
  /// along a row or column are recomputed per element (the CPU kernels hoist
  /// them): loads of a row's value hit the same address in every thread.
  FailureOr<std::vector<Value>> matrixBody(int phase, const std::vector<optrt::ReductionKind> &kinds, Value c,
                                           Value begin, Value end, Value tid, Value partials) {
    SmallVector<opt::AccumulateOp> accumulations = codegen::phaseAccumulations(phases_[phase]);
    Value dims = bufferBase_.at(plan_.dims);
    Value rows = load(i64(), at(dims, constI64(1), i64())), cols = load(i64(), at(dims, constI64(2), i64()));
    Value firstRow = divide(begin, cols), endRow = divide(end, cols);
    Value stride = constI64(kCudaBlockSize);
    std::vector<int> columnSlot(accumulations.size(), -1);
    int64_t numColumnSums = 0;
    for (auto [a, accumulation] : llvm::enumerate(accumulations))
      if (!accumulation.getKind().starts_with("row_"))
        columnSlot[a] = static_cast<int>(numColumnSums++);
    Value columnPartials, firstMatrix, regionFloats;
    if (numColumnSums > 0) {
      columnPartials = columnPartialsOf(partials, c);
      std::tie(firstMatrix, regionFloats) = columnRegion(begin, end, rows, cols);
      // Zeroed by any thread, so every thread waits before adding.
      auto clear = b_.create<scf::ForOp>(loc_, tid, mul(regionFloats, constI64(numColumnSums)), stride);
      {
        OpBuilder::InsertionGuard guard(b_);
        codegen::LoopBody body(b_, clear);
        store(b_.create<arith::ConstantOp>(loc_, b_.getF32FloatAttr(0)).getResult(),
              at(columnPartials, clear.getInductionVar(), f32()));
        body.yield(loc_, {});
      }
      b_.create<gpu::BarrierOp>(loc_);
    }
    std::vector<Value> initial;
    for (optrt::ReductionKind kind : kinds)
      initial.push_back(codegen::reductionIdentity(b_, loc_, kind, 1));
    // Every thread runs every row: the barriers of the row sums below are
    // reached by all of them.
    auto rowLoop = b_.create<scf::ForOp>(loc_, firstRow, endRow, constI64(1), initial);
    OpBuilder::InsertionGuard guard(b_);
    codegen::LoopBody rowBody(b_, rowLoop);
    Value row = rowLoop.getInductionVar();
    Value matrix = divide(row, rows);
    Value rowStart = mul(row, cols);
    std::vector<Value> columnInitial(rowLoop.getRegionIterArgs().begin(), rowLoop.getRegionIterArgs().end());
    size_t numKinds = kinds.size();
    for (opt::AccumulateOp accumulation : accumulations)
      if (accumulation.getKind().starts_with("row_"))
        columnInitial.push_back(codegen::reductionIdentity(b_, loc_, optrt::ReductionKind::Sum, 1));
    auto columnLoop = b_.create<scf::ForOp>(loc_, tid, cols, stride, columnInitial);
    {
      OpBuilder::InsertionGuard inner(b_);
      codegen::LoopBody body(b_, columnLoop);
      Value column = columnLoop.getInductionVar();
      position_ = {row, add(mul(matrix, cols), column), matrix};
      Value index = add(rowStart, column);
      // q8 states: rows of whole q8 blocks (the runtime's condition), so
      // iteration k of every thread is element k of the row's block k, and
      // the block's new absmax is the 256 threads' maximum, as in the flat
      // kernels' blocks.
      Value blockIndex = divide(index, constI64(optrt::kQ8BlockElements));
      if (plan_.blockwise())
        startQ8Block(blockIndex);
      SmallVector<Value> accumulated;
      FailureOr<SmallVector<Value>> inputs =
          codegen::emitElementBody(b_, phases_[phase], *buffers_, 1, access(index, 1), &accumulated);
      if (failed(inputs))
        return failure();
      if (plan_.blockwise())
        finishQ8Block(writtenQ8States(phase), index, blockIndex, tid, Value());
      ValueRange iter = columnLoop.getRegionIterArgs();
      std::vector<Value> next;
      for (size_t r = 0; r < numKinds; ++r)
        next.push_back(codegen::accumulateReduction(b_, loc_, kinds[r], iter[r], (*inputs)[r], 1));
      size_t rowSum = numKinds;
      for (auto [a, accumulation] : llvm::enumerate(accumulations)) {
        if (columnSlot[a] < 0) {
          next.push_back(codegen::accumulateReduction(b_, loc_, optrt::ReductionKind::Sum, iter[rowSum++],
                                                      accumulated[a], 1));
          continue;
        }
        Value offset = add(mul(subtract(matrix, firstMatrix), cols), column);
        Value slot = at(columnPartials, add(mul(regionFloats, constI64(columnSlot[a])), offset), f32());
        store(b_.create<arith::AddFOp>(loc_, load(f32(), slot), accumulated[a]).getResult(), slot);
      }
      body.yield(loc_, next);
    }
    size_t rowSum = numKinds;
    for (opt::AccumulateOp accumulation : accumulations) {
      if (!accumulation.getKind().starts_with("row_"))
        continue;
      blockReduce(optrt::ReductionKind::Sum, columnLoop.getResult(rowSum++), tid, [&](Value total) {
        if (accumulation.getKind().ends_with("_mean"))
          total = b_.create<arith::DivFOp>(loc_, total, b_.create<arith::SIToFPOp>(loc_, f64(), cols));
        Value target = bufferBase_.at(plan_.storage[buffers_->state(accumulation.getInto())]);
        store(b_.create<arith::TruncFOp>(loc_, f32(), total).getResult(), at(target, row, f32()));
      });
    }
    rowBody.yield(loc_, ValueRange(columnLoop.getResults()).take_front(numKinds));
    return std::vector<Value>(rowLoop.getResults().begin(), rowLoop.getResults().end());
  }

  /// A rule that reads tensors as matrices, a pass over each row (column,
  /// matrix) of each matrix: the tensor's first chunk does the whole tensor
  /// (the others' partials stay the identity), matrix after matrix, its
  /// threads striding over the matrix's rows (columns); a sum over them is
  /// the block's tree, stored per matrix by thread 0. A reduction over the
  /// tensor weighs each value by the elements it stands for, as on the CPU.
  FailureOr<std::vector<Value>> axisBody(int phase, const std::vector<optrt::ReductionKind> &kinds, Value begin,
                                         Value tid) {
    SmallVector<opt::AccumulateOp> accumulations = codegen::phaseAccumulations(phases_[phase]);
    optrt::PhaseDomain over = domain(phase);
    bool overRows = over == optrt::PhaseDomain::Rows, overMatrices = over == optrt::PhaseDomain::Matrices;
    Value dims = bufferBase_.at(plan_.dims);
    Value matrices = load(i64(), at(dims, constI64(0), i64()));
    Value rows = load(i64(), at(dims, constI64(1), i64())), cols = load(i64(), at(dims, constI64(2), i64()));
    Value perMatrix = overMatrices ? constI64(1) : overRows ? rows : cols;
    Value first = b_.create<arith::CmpIOp>(loc_, arith::CmpIPredicate::eq, begin, constI64(0));
    Value matrixEnd = b_.create<arith::SelectOp>(loc_, first, matrices, constI64(0));
    std::vector<Value> initial;
    for (optrt::ReductionKind kind : kinds)
      initial.push_back(codegen::reductionIdentity(b_, loc_, kind, 1));
    auto matrixLoop = b_.create<scf::ForOp>(loc_, constI64(0), matrixEnd, constI64(1), initial);
    {
      OpBuilder::InsertionGuard guard(b_);
      codegen::LoopBody matrixBody(b_, matrixLoop);
      Value matrix = matrixLoop.getInductionVar();
      std::vector<Value> loopInitial;
      for (size_t a = 0; a < accumulations.size(); ++a)
        loopInitial.push_back(codegen::reductionIdentity(b_, loc_, optrt::ReductionKind::Sum, 1));
      ValueRange carried = matrixLoop.getRegionIterArgs();
      loopInitial.insert(loopInitial.end(), carried.begin(), carried.end());
      auto loop = b_.create<scf::ForOp>(loc_, tid, perMatrix, constI64(kCudaBlockSize), loopInitial);
      {
        OpBuilder::InsertionGuard inner(b_);
        codegen::LoopBody body(b_, loop);
        Value index = add(mul(matrix, perMatrix), loop.getInductionVar());
        position_ = overRows ? MatrixPosition{index, Value(), matrix} : MatrixPosition{Value(), index, matrix};
        SmallVector<Value> accumulated;
        FailureOr<SmallVector<Value>> inputs =
            codegen::emitElementBody(b_, phases_[phase], *buffers_, 1, access(index, 1), &accumulated);
        if (failed(inputs))
          return failure();
        ValueRange iter = loop.getRegionIterArgs();
        std::vector<Value> next;
        for (size_t a = 0; a < accumulations.size(); ++a)
          next.push_back(codegen::accumulateReduction(b_, loc_, optrt::ReductionKind::Sum, iter[a], accumulated[a], 1));
        for (size_t r = 0; r < kinds.size(); ++r)
          next.push_back(codegen::accumulateReduction(b_, loc_, kinds[r], iter[accumulations.size() + r],
                                                      (*inputs)[r], 1));
        body.yield(loc_, next);
      }
      for (size_t a = 0; a < accumulations.size(); ++a) {
        opt::AccumulateOp accumulation = accumulations[a];
        blockReduce(optrt::ReductionKind::Sum, loop.getResult(a), tid, [&](Value total) {
          if (accumulation.getKind().ends_with("_mean"))
            total = b_.create<arith::DivFOp>(loc_, total, b_.create<arith::SIToFPOp>(loc_, f64(), perMatrix));
          Value target = bufferBase_.at(plan_.storage[buffers_->state(accumulation.getInto())]);
          store(b_.create<arith::TruncFOp>(loc_, f32(), total).getResult(), at(target, matrix, f32()));
        });
      }
      matrixBody.yield(loc_, ValueRange(loop.getResults()).drop_front(accumulations.size()));
    }
    // How many elements each value stands for: the other axis's length (a
    // matrix's: rows x cols).
    Value count = overMatrices ? mul(rows, cols) : overRows ? cols : rows;
    Value weight = b_.create<arith::SIToFPOp>(loc_, f64(), count);
    std::vector<Value> totals;
    for (auto [r, kind] : llvm::enumerate(kinds)) {
      Value total = matrixLoop.getResult(r);
      totals.push_back(kind == optrt::ReductionKind::Max ? total
                                                         : b_.create<arith::MulFOp>(loc_, total, weight).getResult());
    }
    return totals;
  }

  /// The chunk's elements, threads striding over them: 4 at a time where
  /// every buffer of the tensor is 16-byte aligned (element 4k is then at
  /// least 8-byte aligned in every dtype), one at a time for the unaligned
  /// head and tail.
  FailureOr<std::vector<Value>> stridedBody(int phase, const std::vector<optrt::ReductionKind> &kinds, Value begin,
                                            Value end, Value tid, Value misalignment) {
    Value aligned = b_.create<arith::CmpIOp>(
        loc_, arith::CmpIPredicate::eq,
        b_.create<arith::AndIOp>(loc_, misalignment, constI64(kVectorLanes * sizeof(float) - 1)), constI64(0));
    Value mask = constI64(-kVectorLanes);
    Value roundedUp = b_.create<arith::AndIOp>(loc_, add(begin, constI64(kVectorLanes - 1)), mask);
    Value vbegin = b_.create<arith::MinSIOp>(loc_, roundedUp, end);
    Value vend = b_.create<arith::MaxSIOp>(loc_, vbegin, b_.create<arith::AndIOp>(loc_, end, mask));
    vbegin = b_.create<arith::SelectOp>(loc_, aligned, vbegin, end);
    vend = b_.create<arith::SelectOp>(loc_, aligned, vend, end);

    std::vector<Value> scalarInit, vectorInit;
    for (optrt::ReductionKind kind : kinds) {
      scalarInit.push_back(codegen::reductionIdentity(b_, loc_, kind, 1));
      vectorInit.push_back(codegen::reductionIdentity(b_, loc_, kind, kVectorLanes));
    }
    FailureOr<std::vector<Value>> head =
        elementLoop(phase, add(begin, tid), vbegin, kCudaBlockSize, 1, kinds, scalarInit);
    if (failed(head))
      return failure();
    FailureOr<std::vector<Value>> body =
        elementLoop(phase, add(vbegin, mul(tid, constI64(kVectorLanes))), vend, kCudaBlockSize * kVectorLanes,
                    kVectorLanes, kinds, vectorInit);
    if (failed(body))
      return failure();
    std::vector<Value> afterBody;
    for (size_t r = 0; r < kinds.size(); ++r) {
      bool max = kinds[r] == optrt::ReductionKind::Max;
      Value folded = b_.create<vector::ReductionOp>(
          loc_, max ? vector::CombiningKind::MAXIMUMF : vector::CombiningKind::ADD, (*body)[r]);
      afterBody.push_back(max ? b_.create<arith::MaximumFOp>(loc_, (*head)[r], folded).getResult()
                              : b_.create<arith::AddFOp>(loc_, (*head)[r], folded).getResult());
    }
    return elementLoop(phase, add(vend, tid), end, kCudaBlockSize, 1, kinds, afterBody);
  }

  /// The q8 states phase p writes (element-code buffer indices).
  std::set<int> writtenQ8States(int phase) {
    std::set<int> written;
    for (auto store : phases_[phase].getElementBody().getOps<opt::StoreStateOp>())
      if (plan_.absmax.count(buffers_->state(store.getState())))
        written.insert(buffers_->state(store.getState()));
    return written;
  }

  /// Before a q8 block's element code: each q8 state's absmax of block
  /// `blockIndex` (read once), its new value's register zeroed.
  void startQ8Block(Value blockIndex) {
    static_assert(optrt::kQ8BlockElements == kCudaBlockSize, "one thread per element of a q8 block");
    Value zero = b_.create<arith::ConstantOp>(loc_, b_.getF32FloatAttr(0));
    blockAbsmax_.clear();
    for (const auto &[buffer, absmax] : plan_.absmax) {
      blockAbsmax_[buffer] = load(f32(), b_.create<LLVM::GEPOp>(loc_, bufferBase_.at(absmax).getType(), f32(),
                                                              bufferBase_.at(absmax), ValueRange{blockIndex}));
      store(zero, q8Value_.at(buffer));
    }
  }

  /// After a q8 block's element code (every thread of the block reaches it:
  /// it has barriers): for each q8 state the phase writes, the block's
  /// maximum finite magnitude is the new absmax (so a NaN or Inf poisons
  /// nothing else, as on the CPU); each thread in range (`inRange`, or all
  /// when null) stores its element's code, thread 0 the absmax. The barriers
  /// inside blockMax also order every thread's read of the old absmax
  /// before its overwrite.
  void finishQ8Block(const std::set<int> &written, Value index, Value blockIndex, Value tid, Value inRange) {
    for (int buffer : written) {
      bool isSigned = plan_.dtype[buffer] == optrt::Dtype::Q8Signed;
      Value value = load(f32(), q8Value_.at(buffer));
      Value absmax = blockMax(codegen::finiteMagnitude(b_, loc_, value), tid);
      auto storeCode = [&] {
        codegen::Q8Lookups lookups;
        lookups.threshold = [&](OpBuilder &builder, Location loc, Value probe) {
          return sharedTableLoad(builder, loc, isSigned, true, probe);
        };
        Value code = codegen::quantizeQ8(b_, loc_, isSigned, value, absmax, lookups);
        storeRaw(b_, loc_, plan_.storage[buffer], index, b_.create<arith::TruncIOp>(loc_, b_.getI8Type(), code));
      };
      if (inRange)
        ifThen(inRange, storeCode);
      else
        storeCode();
      ifThen(isThread(tid, 0), [&] {
        Value base = bufferBase_.at(plan_.absmax.at(buffer));
        store(absmax, b_.create<LLVM::GEPOp>(loc_, base.getType(), f32(), base, ValueRange{blockIndex}));
      });
    }
  }

  /// A layout with q8 states: the chunk (begin a multiple of 256) one q8
  /// block at a time, thread tid on element blockStart + tid. Each q8
  /// state's absmax is read once per block; the element code writes the new
  /// values of q8 states to registers; then for each q8 state this phase
  /// writes, the block's maximum finite magnitude is the new absmax (so a
  /// NaN or Inf poisons nothing else, as on the CPU), each thread stores its
  /// element's code and thread 0 the absmax (finishQ8Block).
  FailureOr<std::vector<Value>> blockwiseBody(int phase, const std::vector<optrt::ReductionKind> &kinds, Value begin,
                                              Value end, Value tid) {
    constexpr int64_t block = optrt::kQ8BlockElements;
    std::vector<Value> initial;
    for (optrt::ReductionKind kind : kinds)
      initial.push_back(codegen::reductionIdentity(b_, loc_, kind, 1));
    auto blocks = b_.create<scf::ForOp>(loc_, begin, end, constI64(block), initial);
    OpBuilder::InsertionGuard guard(b_);
    codegen::LoopBody body(b_, blocks);
    Value blockStart = blocks.getInductionVar();
    Value index = add(blockStart, tid);
    Value blockEnd = b_.create<arith::MinSIOp>(loc_, add(blockStart, constI64(block)), end);
    Value blockIndex = b_.create<arith::DivSIOp>(loc_, blockStart, constI64(block));
    startQ8Block(blockIndex);
    FailureOr<std::vector<Value>> out =
        elementLoop(phase, index, blockEnd, block, 1, kinds,
                    std::vector<Value>(blocks.getRegionIterArgs().begin(), blocks.getRegionIterArgs().end()));
    if (failed(out))
      return failure();
    Value inRange = b_.create<arith::CmpIOp>(loc_, arith::CmpIPredicate::slt, index, blockEnd);
    finishQ8Block(writtenQ8States(phase), index, blockIndex, tid, inRange);
    body.yield(loc_, *out);
    return std::vector<Value>(blocks.getResults().begin(), blocks.getResults().end());
  }

  /// A block per tensor (grid-stride over tensors): its threads combine the
  /// tensor's chunk partials, thread j chunks j, j + 256, ... in order, then
  /// the block's tree; thread 0 finishes (mean divides by the element count,
  /// norm takes the square root). A thread per tensor would walk a large
  /// tensor's thousands of chunks alone, one load latency each.
  void buildFinishKernel(int phase) {
    OpBuilder::InsertionGuard guard(b_);
    auto kernel = startKernel(facts_.finishEntries[phase], {i64(), ptr(), ptr(), ptr(), ptr(), ptr(), ptr()});
    Value numTensors = kernel.getArgument(0), tensors = kernel.getArgument(1),
          partials = kernel.getArgument(2), reductions = kernel.getArgument(3),
          chunks = kernel.getArgument(4), buffers = kernel.getArgument(5), counter = kernel.getArgument(6);
    unlessStepSkipped(counter);
    Value tid = threadId();
    auto tensorLoop = b_.create<scf::ForOp>(loc_, blockId(), numTensors, gridDim());
    b_.setInsertionPoint(tensorLoop.getBody()->getTerminator());
    Value t = tensorLoop.getInductionVar();
    Value record = gep(tensors, mul(t, constI64(kTensorRecord)), i64());
    Value firstChunk = load(i64(), gep(record, 1, i64()));
    Value endChunk = load(i64(), gep(record, 2, i64()));
    Value size = load(i64(), gep(record, 3, i64()));
    combineColumns(phase, t, tid, firstChunk, endChunk, chunks, buffers, partials);
    Value pStride = constI64(facts_.partialStride);
    int64_t first = reductionBegin(phase), last = reductionEnd(phase);
    for (int64_t r = first; r < last; ++r) {
      optrt::ReductionKind kind = sig_.reductions[r].kind;
      Value local = constI64(r - first);
      auto loop = b_.create<scf::ForOp>(loc_, add(firstChunk, tid), endChunk, constI64(kCudaBlockSize),
                                        ValueRange{codegen::reductionIdentity(b_, loc_, kind, 1)});
      {
        OpBuilder::InsertionGuard inner(b_);
        b_.setInsertionPointToEnd(loop.getBody());
        Value partial = load(f64(), gep(partials, add(mul(loop.getInductionVar(), pStride), local), f64()));
        b_.create<scf::YieldOp>(loc_, combine(kind, loop.getRegionIterArgs()[0], partial));
      }
      blockReduce(kind, loop.getResult(0), tid, [&](Value total) {
        // A group-wide reduction keeps the tensor's sum for the group's
        // combination (groupedReductions).
        if (!sig_.reductions[r].groupWide)
          total = finishReduction(kind, total, size);
        store(total, gep(reductions, add(mul(t, constI64(numReductions_)), constI64(r)), f64()));
      });
    }
  }

  /// Phase p's column sums of tensor t: thread j takes columns j, j + 256,
  /// ... of every matrix, adds each chunk's partial sum in chunk order (f64),
  /// and stores the sum (a mean: divided by rows) into its scratch state.
  void combineColumns(int phase, Value t, Value tid, Value firstChunk, Value endChunk, Value chunks, Value buffers,
                      Value partials) {
    SmallVector<opt::AccumulateOp> sums = columnSums(phase);
    if (sums.empty())
      return;
    Value table = gep(buffers, mul(t, constI64(facts_.buffersPerTensor)), ptr());
    auto bufferOf = [&](int buffer) { return toGlobal(load(ptr(), gep(table, buffer, ptr()))); };
    Value dims = bufferOf(plan_.dims);
    Value matrices = load(i64(), at(dims, constI64(0), i64()));
    Value rows = load(i64(), at(dims, constI64(1), i64())), cols = load(i64(), at(dims, constI64(2), i64()));
    auto columns = b_.create<scf::ForOp>(loc_, tid, mul(matrices, cols), constI64(kCudaBlockSize));
    OpBuilder::InsertionGuard guard(b_);
    codegen::LoopBody columnBody(b_, columns);
    Value j = columns.getInductionVar();
    Value matrix = divide(j, cols);
    std::vector<Value> initial(sums.size(), constF64(0.0));
    auto chunkLoop = b_.create<scf::ForOp>(loc_, firstChunk, endChunk, constI64(1), initial);
    {
      OpBuilder::InsertionGuard inner(b_);
      codegen::LoopBody chunkBody(b_, chunkLoop);
      Value c = chunkLoop.getInductionVar();
      Value record = gep(chunks, mul(c, constI64(kChunkRecord)), i64());
      Value begin = load(i64(), gep(record, 1, i64())), end = load(i64(), gep(record, 2, i64()));
      auto [firstMatrix, regionFloats] = columnRegion(begin, end, rows, cols);
      Value lastMatrix = subtract(add(firstMatrix, divide(regionFloats, cols)), constI64(1));
      Value touched = b_.create<arith::AndIOp>(
          loc_, b_.create<arith::CmpIOp>(loc_, arith::CmpIPredicate::sle, firstMatrix, matrix),
          b_.create<arith::CmpIOp>(loc_, arith::CmpIPredicate::sle, matrix, lastMatrix));
      ValueRange sumsSoFar = chunkLoop.getRegionIterArgs();
      auto ifTouched = b_.create<scf::IfOp>(loc_, TypeRange(sumsSoFar), touched, /*withElseRegion=*/true);
      {
        OpBuilder::InsertionGuard branch(b_);
        b_.setInsertionPointToStart(ifTouched.thenBlock());
        Value region = columnPartialsOf(partials, c);
        Value offset = subtract(j, mul(firstMatrix, cols));
        std::vector<Value> next;
        for (size_t k = 0; k < sums.size(); ++k) {
          Value slot = add(mul(regionFloats, constI64(static_cast<int64_t>(k))), offset);
          Value partial = load(f32(), at(region, slot, f32()));
          next.push_back(b_.create<arith::AddFOp>(loc_, sumsSoFar[k], toF64(partial)));
        }
        b_.create<scf::YieldOp>(loc_, next);
        b_.setInsertionPointToStart(ifTouched.elseBlock());
        b_.create<scf::YieldOp>(loc_, sumsSoFar);
      }
      chunkBody.yield(loc_, ifTouched.getResults());
    }
    for (auto [k, accumulation] : llvm::enumerate(sums)) {
      Value total = chunkLoop.getResult(k);
      if (accumulation.getKind().ends_with("_mean"))
        total = b_.create<arith::DivFOp>(loc_, total, b_.create<arith::SIToFPOp>(loc_, f64(), rows));
      Value target = bufferOf(plan_.storage[buffers_->state(accumulation.getInto())]);
      store(b_.create<arith::TruncFOp>(loc_, f32(), total).getResult(), at(target, j, f32()));
    }
    columnBody.yield(loc_, {});
  }

  /// A reduction's result from its combined partials: mean divides by the
  /// element count, norm takes the square root (optrt::finishReduction).
  Value finishReduction(optrt::ReductionKind kind, Value total, Value count) {
    if (kind == optrt::ReductionKind::Mean)
      return b_.create<arith::DivFOp>(loc_, total, b_.create<arith::SIToFPOp>(loc_, f64(), count));
    if (kind == optrt::ReductionKind::Norm)
      return b_.create<math::SqrtOp>(loc_, total);
    return total;
  }

  /// The reductions tensor t's uniform and scalar-update functions read: its
  /// row of the table, but each group-wide one combined over the tensors of
  /// t's group in tensor order (finish[p] left each tensor's sum) and
  /// finished over the group's elements, as the CPU runtime does. In a
  /// local copy: other threads read the table's rows meanwhile. Each thread
  /// walks the tensor table (T loads a reduction; T is hundreds).
  Value groupedReductions(Value numTensors, Value tensors, Value reductions, Value t) {
    Value mine = gep(reductions, mul(t, constI64(numReductions_)), f64());
    std::vector<int64_t> wide;
    for (int64_t r = 0; r < numReductions_; ++r)
      if (sig_.reductions[r].groupWide)
        wide.push_back(r);
    if (wide.empty())
      return mine;
    Value local = entryAlloca(f64(), numReductions_);
    for (int64_t r = 0; r < numReductions_; ++r)
      store(load(f64(), gep(mine, r, f64())), gep(local, r, f64()));
    Value group = load(i64(), gep(tensors, mul(t, constI64(kTensorRecord)), i64()));
    std::vector<Value> initial;
    for (int64_t r : wide)
      initial.push_back(codegen::reductionIdentity(b_, loc_, sig_.reductions[r].kind, 1));
    initial.push_back(constI64(0));
    auto loop = b_.create<scf::ForOp>(loc_, constI64(0), numTensors, constI64(1), initial);
    {
      OpBuilder::InsertionGuard guard(b_);
      codegen::LoopBody body(b_, loop);
      Value i = loop.getInductionVar();
      Value record = gep(tensors, mul(i, constI64(kTensorRecord)), i64());
      Value same = b_.create<arith::CmpIOp>(loc_, arith::CmpIPredicate::eq, load(i64(), record), group);
      ValueRange acc = loop.getRegionIterArgs();
      std::vector<Value> next;
      for (size_t k = 0; k < wide.size(); ++k) {
        Value value = load(f64(), gep(reductions, add(mul(i, constI64(numReductions_)), constI64(wide[k])), f64()));
        Value combined = combine(sig_.reductions[wide[k]].kind, acc[k], value);
        next.push_back(b_.create<arith::SelectOp>(loc_, same, combined, acc[k]));
      }
      Value elements = add(acc.back(), load(i64(), gep(record, 3, i64())));
      next.push_back(b_.create<arith::SelectOp>(loc_, same, elements, acc.back()));
      body.yield(loc_, next);
    }
    for (size_t k = 0; k < wide.size(); ++k)
      store(finishReduction(sig_.reductions[wide[k]].kind, loop.getResult(k), loop.getResults().back()),
            gep(local, wide[k], f64()));
    return local;
  }

  void buildScalarsKernel() {
    OpBuilder::InsertionGuard guard(b_);
    auto kernel = startKernel(facts_.scalarsEntry, {i64(), ptr(), ptr(), ptr(), ptr(), ptr()});
    Value numTensors = kernel.getArgument(0), tensors = kernel.getArgument(1),
          hypers = kernel.getArgument(2), counter = kernel.getArgument(3),
          scalars = kernel.getArgument(4), reductions = kernel.getArgument(5);
    Value next = entryAlloca(f64(), numScalars_);
    unlessStepSkipped(counter);
    Value t = globalThread();
    ifThen(b_.create<arith::CmpIOp>(loc_, arith::CmpIPredicate::slt, t, numTensors), [&] {
      auto [groupHypers, step] = hypersAndStep(tensors, hypers, counter, t);
      Value mine = gep(scalars, mul(t, constI64(numScalars_)), f64());
      b_.create<func::CallOp>(loc_, scalarUpdateFunctionName(sig_.rule), TypeRange{},
                              ValueRange{groupHypers, step, mine,
                                         groupedReductions(numTensors, tensors, reductions, t), next});
      // In place: the update read every start-of-step value first, and no
      // other thread touches this tensor's scalars.
      for (int64_t j = 0; j < numScalars_; ++j)
        store(load(f64(), gep(next, j, f64())), gep(mine, j, f64()));
    });
  }

  /// The step's last kernel: counts the step (the optimizer's steps, then
  /// each group's), or, when the step was skipped, only clears the skip flag
  /// for the next one.
  void buildAdvanceKernel() {
    OpBuilder::InsertionGuard guard(b_);
    auto kernel = startKernel(facts_.advanceEntry, {ptr(), i64()});
    Value counter = kernel.getArgument(0), numGroups = kernel.getArgument(1);
    ifThen(isThread(globalThread(), 0), [&] {
      Value flag = gep(counter, kSkipFlagWord, i32());
      Value skipped = b_.create<arith::CmpIOp>(loc_, arith::CmpIPredicate::ne, load(i32(), flag), constI32(0));
      auto ifSkipped = b_.create<scf::IfOp>(loc_, skipped, /*withElseRegion=*/true);
      OpBuilder::InsertionGuard inner(b_);
      b_.setInsertionPoint(ifSkipped.thenBlock()->getTerminator());
      store(constI32(0), flag);
      b_.setInsertionPoint(ifSkipped.elseBlock()->getTerminator());
      store(b_.create<arith::AddFOp>(loc_, load(f64(), counter), constF64(1.0)), counter);
      auto groups = b_.create<scf::ForOp>(loc_, constI64(kGroupCounters), add(numGroups, constI64(kGroupCounters)),
                                          constI64(1));
      b_.setInsertionPoint(groups.getBody()->getTerminator());
      Value at = gep(counter, groups.getInductionVar(), f64());
      store(b_.create<arith::AddFOp>(loc_, load(f64(), at), constF64(1.0)), at);
    });
  }


  ModuleOp optModule_;
  ModuleOp host_;
  const KernelSignature &sig_;
  std::string layoutText_;
  optrt::CudaKernels &facts_;
  int64_t numScalars_ = 0;
  int64_t numReductions_ = 0;
  std::optional<codegen::BufferLayout> buffers_;
  std::vector<opt::PhaseOp> phases_;
  codegen::LayoutPlan plan_;
  // Per element kernel being built:
  int currentPhase_ = 0;
  std::map<int, Value> bufferBase_; // by the layout's buffer index
  std::map<int, Value> q8Value_;    // q8 element-code buffer -> its new value's alloca
  std::map<int, Value> blockAbsmax_;
  Value stochasticKey_;
  std::map<int, Value> uniformLoads_;
  Value tensorUniforms_;
  Operation *prologueEnd_ = nullptr;
  MatrixPosition position_; // while emitting a matrix rule's element code
};

} // namespace

OwningOpRef<ModuleOp> buildCudaKernels(ModuleOp optModule, ModuleOp hostKernels,
                                       const KernelSignature &signature, const std::string &layout,
                                       optrt::CudaKernels &facts) {
  MLIRContext *context = hostKernels.getContext();
  context->loadDialect<gpu::GPUDialect, NVVM::NVVMDialect, func::FuncDialect, scf::SCFDialect,
                       LLVM::LLVMDialect, arith::ArithDialect, math::MathDialect,
                       vector::VectorDialect>();
  return DeviceKernelBuilder(optModule, hostKernels, signature, layout, facts).run();
}

} // namespace optdsl
