// "Confirming your payment": reload until the payment's webhook has arrived (the server then
// serves the Space itself). Without script, the page's "Check again" link does the same.
const waiting = document.querySelector("[data-reload-after]");
if (waiting) {
  const ms = Number(waiting.getAttribute("data-reload-after")) || 1500;
  setTimeout(() => location.reload(), ms);
}
