// The example site's script.
document.addEventListener("DOMContentLoaded", () => {
  document.querySelector("header").classList.add("ready");
});
