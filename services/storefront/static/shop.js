// Optional: the shop works without it. An order still being confirmed reloads itself until it
// is done.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const waiting = document.querySelector("[data-refresh]");
  if (waiting) {
    const seconds = Number(waiting.getAttribute("data-refresh")) || 3;
    setTimeout(() => window.location.reload(), seconds * 1000);
  }
});
