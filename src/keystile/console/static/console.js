// keystile console: the only script. Everything works without it except
// copying a secret to the clipboard; it also shows times in the viewer's
// own UTC offset (the UTC value stays in the tooltip).
"use strict";

function offsetText(date) {
  const minutes = -date.getTimezoneOffset();
  const sign = minutes >= 0 ? "+" : "-";
  const abs = Math.abs(minutes);
  const pad = (n) => String(n).padStart(2, "0");
  return "UTC" + sign + pad(Math.floor(abs / 60)) + ":" + pad(abs % 60);
}

function localTimes() {
  const pad = (n) => String(n).padStart(2, "0");
  for (const element of document.querySelectorAll("time[datetime]")) {
    const date = new Date(element.getAttribute("datetime"));
    if (Number.isNaN(date.getTime())) continue;
    element.textContent =
      date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + " " +
      pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds()) +
      " (" + offsetText(date) + ")";
    element.title = element.getAttribute("datetime") + " (UTC)";
  }
}

function copyButtons() {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const field = document.getElementById(button.dataset.copy);
    const status = button.parentElement.querySelector(".copied");
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(field.value);
        status.textContent = "Copied.";
      } catch (error) {
        field.select();
        status.textContent = "Select the text and copy it.";
      }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes();
  copyButtons();
});
