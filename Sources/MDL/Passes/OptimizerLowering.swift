import Foundation

/// Optimizer lowering: each `apply_gradients` becomes the optimizer's update rule in IR, so it
/// fuses with the backward graph later. Optimizer state (moments, the update count, the run's
/// total update count for schedules) becomes named state globals that checkpoints save:
/// `@OPT.step`, `@OPT.total_steps` (written by the runtime before training), and per parameter
/// `@OPT.m.PARAM`, `@OPT.v.PARAM` (Adam), `@OPT.momentum.PARAM` (SGD, RMSProp), `@OPT.square_avg.PARAM`
/// (RMSProp), `@OPT.sum.PARAM` (Adagrad). The rules and defaults follow torch.optim.
enum OptimizerLowering {
    static func run(_ m: Module, _ diags: DiagnosticEngine) -> Module {
        for f in m.functions where f.kind == .step {
            guard let at = f.body.operations.firstIndex(where: { $0.op == .apply_gradients }) else { continue }
            let apply = f.body.operations[at]
            guard case .symbol(let name)? = apply.attrs["optimizer"], let entry = m.entries.first(where: { $0.kind == .optimizer && $0.name == name }),
                  let params = apply.attrs["params"]?.symbols else { continue }
            let b = IRBuilder(f)
            b.location = apply.location
            do {
                try lower(entry, params: params, grads: Array(apply.operands.dropFirst()), module: m, builder: b)
                f.body.operations.replaceSubrange(at...at, with: b.operations)
            } catch let e as InternalError {
                diags.error("internal compiler error lowering optimizer @\(name): \(e.message)", at: apply.location)
            } catch {}
        }
        return m
    }

    /// Hyperparameter defaults, as in torch.optim.
    static let defaults: [String: [String: Double]] = [
        "sgd": ["momentum": 0, "weight_decay": 0, "nesterov": 0],
        "adam": ["beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0],
        "adamw": ["beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01],
        "rmsprop": ["alpha": 0.99, "eps": 1e-8, "momentum": 0, "weight_decay": 0],
        "adagrad": ["eps": 1e-10, "weight_decay": 0],
    ]

    static func lower(_ entry: Entry, params: [String], grads: [Value], module m: Module, builder b: IRBuilder) throws {
        func hyper(_ k: String) -> Double { entry.attrs[k]?.doubleValue ?? defaults[entry.type]?[k] ?? 0 }
        let lr = entry.attrs["lr"]?.doubleValue ?? 1e-3
        func state(_ kind: String, _ type: TensorType, for param: String? = nil) throws -> (name: String, value: Value) {
            let n = param.map { "\(entry.name).\(kind).\($0)" } ?? "\(entry.name).\(kind)"
            if m.global(n) == nil {
                m.globals.append(Global(kind: .state, name: n, type: type, initializer: ["total_steps", "lr_scale"].contains(kind) ? "ones" : "zeros", initAttrs: [:]))
            }
            return (n, b.load(n, type))
        }
        func set(_ name: String, _ v: Value) { b.append(Operation(op: .global_set, operands: [v], results: [], attrs: ["name": .symbol(name)], location: b.location)) }

        // The update count: t counts this update (1 on the first).
        let step = try state("step", TensorType(.f32, []))
        let t = try b.add(step.value, try b.constant(1))
        set(step.name, t)
        // The schedule's rate times `@OPT.lr_scale` (1 unless a binary's `--lr X` sets it to X / lr).
        let rate = try b.emit(.mul, [try learningRate(entry, base: lr, completed: step.value, builder: b, state: state),
                                     try state("lr_scale", TensorType(.f32, [])).value])

        var g = grads
        if let clip = entry.attrs["clip_norm"]?.doubleValue {
            // Clip by the global norm of all gradients of this optimizer (torch's clip_grad_norm_).
            var total = try b.constant(0)
            for x in g {
                let axes = Array(0..<b.shape(x).count)
                let sq = try b.mul(x, x)
                total = try b.add(total, axes.isEmpty ? sq : try b.emit(.sum, [sq], ["axes": .ints(axes), "keepdims": .bool(false)]))
            }
            let norm = try b.emit(.sqrt, [total])
            let factor = try b.emit(.min, [try b.constant(1), try b.div(try b.constant(clip), try b.add(norm, try b.constant(1e-6)))])
            g = try g.map { try b.mul($0, factor) }
        }
        let wd = hyper("weight_decay")
        for (p, grad) in zip(params, g) {
            let type = m.global(p)!.type
            let w = b.load(p, type)
            var gp = grad
            if wd != 0 && entry.type != "adamw" { gp = try b.add(gp, try b.scale(w, wd)) }
            var update: Value
            switch entry.type {
            case "sgd":
                update = gp
                let mu = hyper("momentum")
                if mu != 0 {
                    let buf = try state("momentum", type, for: p)
                    let next = try b.add(try b.scale(buf.value, mu), gp)
                    set(buf.name, next)
                    update = hyper("nesterov") != 0 ? try b.add(gp, try b.scale(next, mu)) : next
                }
            case "adam", "adamw":
                let (b1, b2) = (hyper("beta1"), hyper("beta2"))
                let m1 = try state("m", type, for: p), m2 = try state("v", type, for: p)
                let nm = try b.add(try b.scale(m1.value, b1), try b.scale(gp, 1 - b1))
                let nv = try b.add(try b.scale(m2.value, b2), try b.scale(try b.mul(gp, gp), 1 - b2))
                set(m1.name, nm)
                set(m2.name, nv)
                let c1 = try b.sub(try b.constant(1), try b.emit(.pow, [try b.constant(b1), t]))
                let c2 = try b.sub(try b.constant(1), try b.emit(.pow, [try b.constant(b2), t]))
                // torch's arrangement, sqrt(v) / sqrt(c2) + eps and m / c1, with the bias corrections
                // as reciprocals of scalars: one division per element instead of three.
                let reciprocal = { (x: Value) in try b.div(try b.constant(1), x) }
                let denom = try b.add(try b.mul(try b.emit(.sqrt, [nv]), try reciprocal(try b.emit(.sqrt, [c2]))), try b.constant(hyper("eps")))
                update = try b.mul(try b.div(nm, denom), try reciprocal(c1))
            case "rmsprop":
                let alpha = hyper("alpha")
                let sq = try state("square_avg", type, for: p)
                let nsq = try b.add(try b.scale(sq.value, alpha), try b.scale(try b.mul(gp, gp), 1 - alpha))
                set(sq.name, nsq)
                update = try b.div(gp, try b.add(try b.emit(.sqrt, [nsq]), try b.constant(hyper("eps"))))
                let mu = hyper("momentum")
                if mu != 0 {
                    let buf = try state("momentum", type, for: p)
                    let next = try b.add(try b.scale(buf.value, mu), update)
                    set(buf.name, next)
                    update = next
                }
            case "adagrad":
                let acc = try state("sum", type, for: p)
                let nacc = try b.add(acc.value, try b.mul(gp, gp))
                set(acc.name, nacc)
                update = try b.div(gp, try b.add(try b.emit(.sqrt, [nacc]), try b.constant(hyper("eps"))))
            default:
                throw InternalError(message: "unknown optimizer '\(entry.type)'")
            }
            var decayed = w
            if entry.type == "adamw" && wd != 0 {
                // Decoupled weight decay: w * (1 - lr_t * wd), before the Adam step.
                decayed = try b.mul(w, try b.sub(try b.constant(1), try b.scale(rate, wd)))
            }
            set(p, try b.sub(decayed, try b.mul(rate, update)))
        }
    }

    /// The learning rate of this update as an f32[] value: the base rate shaped by the schedule,
    /// from the number of completed updates `s` and the run's total `@OPT.total_steps`.
    static func learningRate(_ entry: Entry, base lr: Double, completed s: Value, builder b: IRBuilder,
                             state: (String, TensorType, String?) throws -> (name: String, value: Value)) throws -> Value {
        guard case .string(let kind)? = entry.attrs["schedule"], kind != "constant_lr" else { return try b.constant(lr) }
        func attr(_ k: String, _ d: Double) -> Double { entry.attrs["schedule.\(k)"]?.doubleValue ?? d }
        func cosineBetween(_ start: Double, _ end: Double, _ progress: Value) throws -> Value {
            // end + (start - end) * (1 + cos(pi * progress)) / 2
            let c = try b.emit(.cos, [try b.scale(progress, Double.pi)])
            return try b.add(try b.constant(end), try b.scale(try b.add(try b.constant(1), c), (start - end) / 2))
        }
        switch kind {
        case "step_lr":
            let every = max(1, attr("every", 1))
            let k = try b.emit(.floor, [try b.scale(s, 1 / every)])
            return try b.scale(try b.emit(.pow, [try b.constant(attr("gamma", 0.1)), k]), lr)
        case "cosine_lr":
            let total = try state("total_steps", TensorType(.f32, []), nil).value
            let warmup = attr("warmup", 0), minLR = attr("min_lr", 0)
            let span = try b.emit(.max, [try b.sub(total, try b.constant(warmup)), try b.constant(1)])
            let progress = try b.emit(.min, [try b.div(try b.emit(.max, [try b.sub(s, try b.constant(warmup)), try b.constant(0)]), span), try b.constant(1)])
            let decayed = try cosineBetween(lr, minLR, progress)
            guard warmup > 0 else { return decayed }
            let ramp = try b.scale(try b.add(s, try b.constant(1)), lr / warmup)
            return try b.emit(.select, [try b.emit(.lt, [s, try b.constant(warmup)]), ramp, decayed])
        case "onecycle_lr":
            // torch's OneCycleLR with cosine annealing: max_lr/25 up to max_lr, then down to max_lr/25/1e4.
            let total = try state("total_steps", TensorType(.f32, []), nil).value
            let peak = attr("max_lr", lr), pct = attr("pct_start", 0.3)
            let initial = peak / 25, final = initial / 1e4
            let upEnd = try b.sub(try b.scale(total, pct), try b.constant(1))
            let downEnd = try b.sub(total, try b.constant(1))
            let upProgress = try b.div(s, try b.emit(.max, [upEnd, try b.constant(1)]))
            let downProgress = try b.emit(.min, [try b.div(try b.sub(s, upEnd), try b.emit(.max, [try b.sub(downEnd, upEnd), try b.constant(1)])), try b.constant(1)])
            let up = try cosineBetween(initial, peak, upProgress)
            let down = try cosineBetween(peak, final, downProgress)
            return try b.emit(.select, [try b.emit(.le, [s, upEnd]), up, down])
        default:
            throw InternalError(message: "unknown schedule '\(kind)'")
        }
    }

}
