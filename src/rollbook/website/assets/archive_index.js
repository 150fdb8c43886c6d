// The archive index: sort by a column, filter by column, and page through thousands of runs, in the browser.
// Shipped by the rollbook MkDocs plugin (no CDN: the site must work offline). Without JavaScript the page
// shows the whole table. Filters may also come from the address: archive/?runbook=rollback&outcome=refused.
(function () {
  "use strict";

  function setUp(table) {
    if (table.dataset.rollbookReady) return;
    table.dataset.rollbookReady = "1";
    var pageSize = parseInt(table.dataset.pageSize, 10) || 50;
    var body = table.tBodies[0];
    var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var rows = Array.prototype.slice.call(body.rows).map(function (row) {
      var cells = Array.prototype.slice.call(row.cells);
      return {
        row: row,
        text: cells.map(function (cell) { return cell.textContent.trim().toLowerCase(); }),
        key: cells.map(function (cell) { return cell.dataset.sort || cell.textContent.trim(); }),
      };
    });
    var wanted = new URLSearchParams(window.location.search);
    var filters = headers.map(function (header) {
      var input = document.createElement("input");
      var name = header.textContent.trim();
      input.type = "search";
      input.placeholder = "filter";
      input.setAttribute("aria-label", "filter by " + name);
      input.value = wanted.get(name.split(" ")[0]) || "";
      var cell = document.createElement("th");
      cell.appendChild(input);
      return { cell: cell, input: input };
    });
    var filterRow = table.tHead.insertRow(-1);
    filterRow.className = "rollbook-filters";
    filters.forEach(function (filter) { filterRow.appendChild(filter.cell); });

    var pager = document.createElement("div");
    pager.className = "rollbook-pager";
    var previous = button("← newer", function () { show(page - 1); });
    var next = button("older →", function () { show(page + 1); });
    var status = document.createElement("span");
    status.setAttribute("role", "status");
    pager.appendChild(previous);
    pager.appendChild(status);
    pager.appendChild(next);
    (table.closest(".md-typeset__scrollwrap") || table).insertAdjacentElement("afterend", pager);

    var order = { column: -1, descending: false };
    var matching = rows;
    var page = 0;

    function button(label, onClick) {
      var element = document.createElement("button");
      element.type = "button";
      element.className = "md-button";
      element.textContent = label;
      element.addEventListener("click", onClick);
      return element;
    }

    function apply() {
      var terms = filters.map(function (filter) { return filter.input.value.trim().toLowerCase(); });
      matching = rows.filter(function (entry) {
        return terms.every(function (term, column) { return !term || entry.text[column].indexOf(term) !== -1; });
      });
      if (order.column >= 0) {
        var column = order.column, sign = order.descending ? -1 : 1;
        matching = matching.slice().sort(function (a, b) {
          return sign * a.key[column].localeCompare(b.key[column], undefined, { numeric: true });
        });
      }
      show(0);
    }

    function show(wantedPage) {
      var pages = Math.max(1, Math.ceil(matching.length / pageSize));
      page = Math.min(Math.max(wantedPage, 0), pages - 1);
      var shown = matching.slice(page * pageSize, (page + 1) * pageSize);
      var fragment = document.createDocumentFragment();
      shown.forEach(function (entry) { fragment.appendChild(entry.row); });
      body.replaceChildren(fragment);
      status.textContent = matching.length === 0 ? "no run matches"
        : "runs " + (page * pageSize + 1) + "–" + (page * pageSize + shown.length) + " of " + matching.length
          + (matching.length < rows.length ? " matching (" + rows.length + " in all)" : "");
      previous.disabled = page === 0;
      next.disabled = page >= pages - 1;
    }

    headers.forEach(function (header, column) {
      header.classList.add("rollbook-sortable");
      header.tabIndex = 0;
      header.setAttribute("aria-sort", "none");
      function sort() {
        order = { column: column, descending: order.column === column ? !order.descending : false };
        headers.forEach(function (other) { other.setAttribute("aria-sort", "none"); });
        header.setAttribute("aria-sort", order.descending ? "descending" : "ascending");
        apply();
      }
      header.addEventListener("click", sort);
      header.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sort(); }
      });
    });
    filters.forEach(function (filter) { filter.input.addEventListener("input", apply); });
    apply();
  }

  function setUpAll() {
    document.querySelectorAll("table.rollbook-archive").forEach(setUp);
  }

  // Material's instant navigation replaces the page without a load event; its document$ says when.
  if (window.document$ && typeof window.document$.subscribe === "function") {
    window.document$.subscribe(setUpAll);
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setUpAll);
  } else {
    setUpAll();
  }
})();
