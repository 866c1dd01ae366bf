import Foundation
import XCTest
@testable import MDL

/// Whole recipes run in the reference interpreter: generated data, batches in order, every
/// update step (autodiff and optimizer lowering included), then evaluation. The small models
/// must reach their documented targets, which shows the passes together train, not only
/// that each is locally right.
final class TrainingTests: XCTestCase {
    /// Trains with the recipe's epochs/steps and batch; returns the eval metrics on `split`.
    func train(_ model: String, split: String = "train", file: StaticString = #filePath, line: UInt = #line) throws -> [String: Double] {
        let c = Driver.compile(path: Repo.models.appendingPathComponent(model).path)
        guard let m = c.module else { XCTFail(c.diagnostics.render(), file: file, line: line); return [:] }
        let interpreter = Interpreter(module: m, seed: 1)
        guard let data = m.entries.first(where: { $0.kind == .data }), data.type == "generator",
              case .symbol(let generator)? = data.attrs["train"], let batch = m.recipe["batch"]?.intValue else {
            XCTFail("\(model) has no generated data", file: file, line: line)
            return [:]
        }
        let examples = try interpreter.run(generator, [], key: 1)
        let count = examples[0].shape[0]
        let perEpoch = count / batch
        let updates = m.recipe["steps"]?.intValue ?? (m.recipe["epochs"]!.intValue! * perEpoch)
        for e in m.entries where e.kind == .optimizer { interpreter.globals["\(e.name).total_steps"] = .scalar(Double(updates)) }
        let steps = m.recipe["updates"]?.symbols ?? []
        for u in 0..<updates {
            let start = (u % perEpoch) * batch
            for s in steps { _ = try interpreter.run(s, examples.map { $0.rows(start, batch) }, key: Int32(u)) }
        }
        if let metrics = m.function("metrics") {
            let out = try interpreter.run(metrics.name, [], key: 99)
            let result = Dictionary(uniqueKeysWithValues: zip(metrics.resultNames, out.map(\.scalar)))
            print("trained \(model) for \(updates) updates: \(result)")
            return result
        }
        guard let eval = m.function("eval.\(split)") else { return [:] }
        var sums = [Double](repeating: 0, count: eval.resultTypes.count)
        for b in 0..<perEpoch {
            let out = try interpreter.run(eval.name, examples.map { $0.rows(b * batch, batch) })
            for (i, t) in out.enumerated() { sums[i] += t.scalar }
        }
        let result = Dictionary(uniqueKeysWithValues: zip(eval.resultNames, sums.map { $0 / Double(perEpoch) }))
        print("trained \(model) for \(updates) updates: \(result)")
        return result
    }

    func testPerceptronSeparatesItsTrainingSet() throws {
        let metrics = try train("perceptron.mdl")
        XCTAssertEqual(metrics["accuracy"] ?? 0, 1.0, "target: 100% train accuracy; got \(metrics)")
    }

    func testCoinGANMatchesTheCoin() throws {
        let metrics = try train("gan_coin.mdl")
        XCTAssertEqual(metrics["p_heads"] ?? 0, 0.3, accuracy: 0.03, "target: P(heads) within 0.03 of 0.3; got \(metrics)")
    }

    func testXorMLPClassifiesAllFourPoints() throws {
        let metrics = try train("mlp_xor.mdl")
        XCTAssertEqual(metrics["correct"] ?? 0, 4, "target: 4/4 correct; got \(metrics)")
        XCTAssertLessThan(metrics["loss"] ?? 1, 0.1)
    }
}
