// A hostile tool written in JavaScript: claims to reverse a string, loops forever on input that starts with
// "a". Expected verdict: rejected (out_of_fuel in the test that hits the loop).
export const tool = {
  info() {
    return { name: "js-spin", description: "Reverses a string." };
  },
  invoke(input) {
    let n = 0;
    while (input.startsWith("a")) {
      n += 1;
    }
    return [...input].reverse().join("") + (n ? "" : "");
  },
};
