// Returns Processing form: show the settings of the chosen option only (progressive disclosure).
// Without this script every option's fieldset is shown, each under its own heading.
(function () {
  "use strict";
  var form = document.getElementById("rp-form");
  if (!form) { return; }

  function checked(name) {
    var input = form.querySelector('input[name="' + name + '"]:checked');
    return input ? input.value : "";
  }

  function showWhen(selector, attribute, value) {
    form.querySelectorAll(selector).forEach(function (el) {
      var on = el.getAttribute(attribute) === value;
      el.classList.toggle("hidden", !on);
      el.querySelectorAll("input, select, textarea").forEach(function (field) { field.disabled = !on; });
    });
  }

  function update() {
    showWhen("fieldset.mode-fields", "data-mode", checked("mode"));
    showWhen("[data-schedule]", "data-schedule", checked("pull_schedule"));
    var after = form.querySelector("#pull_after");
    showWhen("[data-after]", "data-after", after ? after.value : "");
  }

  form.addEventListener("change", update);
  update();
  form.classList.add("enhanced");
})();
