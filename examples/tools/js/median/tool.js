// A tool written in JavaScript: the median of a JSON array of numbers.
// Built with componentize-js against world converge-tool (scripts/polyglot-tools).
export const tool = {
  info() {
    return { name: "js-median", description: "The median of a JSON array of numbers." };
  },
  invoke(input) {
    let xs;
    try {
      xs = JSON.parse(input);
    } catch (e) {
      throw `not JSON: ${e.message}`;
    }
    if (!Array.isArray(xs) || xs.length === 0 || !xs.every((x) => typeof x === "number")) {
      throw "expected a non-empty array of numbers";
    }
    xs = [...xs].sort((a, b) => a - b);
    const m = xs.length >> 1;
    return String(xs.length % 2 ? xs[m] : (xs[m - 1] + xs[m]) / 2);
  },
};
