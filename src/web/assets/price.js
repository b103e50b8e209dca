// The live price of the purchase dialog: the only script of the dashboard.
// Integer arithmetic on micros (BigInt), as the server does; the page works
// without it (the price is shown again on the confirm step).
(function () {
  const form = document.getElementById('purchase-form');
  if (!form) return;
  const input = form.querySelector('input[name=credits]');
  const out = document.getElementById('purchase-price');
  const unit = BigInt(form.dataset.unitMicros);
  const currency = form.dataset.currency;
  const symbol = currency === 'USD' ? '$' : currency + ' ';
  const group = (digits) => digits.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  const show = (micros) => {
    const cents = (micros + 5000n) / 10000n;
    return symbol + group((cents / 100n).toString()) + '.' + (cents % 100n).toString().padStart(2, '0');
  };
  const unitText = () => {
    let s = (unit / 1000000n).toString() + '.' + (unit % 1000000n).toString().padStart(6, '0');
    s = s.replace(/0+$/, '');
    if (s.split('.')[1].length < 2) s = s.padEnd(s.indexOf('.') + 3, '0');
    return symbol + s;
  };
  const update = () => {
    const text = input.value.replace(/,/g, '').trim();
    if (!/^[0-9]+$/.test(text) || BigInt(text) === 0n || BigInt(text) > 1000000000n) {
      out.textContent = 'Enter a whole number of credits from 1 to 1,000,000,000.';
      return;
    }
    const n = BigInt(text);
    out.textContent = group(n.toString()) + ' credits x ' + unitText() + ' = ' + show(n * unit) +
      ', billed on ' + form.dataset.billsOn;
  };
  input.addEventListener('input', update);
})();
